// Package cudnn binds the few cuDNN functions Kiln uses for convolutions
// (the classic descriptor API of cuDNN 8 and 9), opened with dlopen at run
// time. cuDNN is optional: without it Kiln convolves with its own kernels.
package cudnn

import (
	"fmt"
	"unsafe"

	"github.com/ebitengine/purego"
	"github.com/kiln-project/kiln/cuda/internal/cu"
)

// Data types (cudnnDataType_t).
const (
	DataFloat    = 0
	DataHalf     = 2
	DataBFloat16 = 9
)

const (
	formatNHWC        = 1
	crossCorrelation  = 1
	tensorOpMath      = 1
	fmaMath           = 3
	algoPerfSize      = 48 // sizeof(cudnnConvolutionFwdAlgoPerf_t)
	maxAlgos          = 8
	statusSuccess     = 0
	statusNotSupport  = 9
	statusAllocFailed = 2
)

// Error is a failed cuDNN call.
type Error struct {
	Op     string
	Status int
}

// Error names the call and the cuDNN status number.
func (e *Error) Error() string { return fmt.Sprintf("%s: cudnn status %d", e.Op, e.Status) }

// Is matches cu.ErrOutOfMemory for CUDNN_STATUS_ALLOC_FAILED.
func (e *Error) Is(target error) bool {
	return target == cu.ErrOutOfMemory && e.Status == statusAllocFailed
}

// Lib is an opened cuDNN.
type Lib struct {
	Path    string
	Version int

	fCreate, fDestroy, fSetStream                       uintptr
	fCreateTensor, fSetTensor4d, fDestroyTensor         uintptr
	fCreateFilter, fSetFilter4d, fDestroyFilter         uintptr
	fCreateConv, fSetConv2d, fSetConvMath, fDestroyConv uintptr
	fFindFwdEx, fGetFwdWorkspace, fConvFwd              uintptr
	fBiasAct, fCreateAct, fDestroyAct                   uintptr
	setAct                                              func(desc uintptr, mode, nan int32, coef float64) int32
}

// Load opens libcudnn.so.9 (or .so.8) from the CUDA library folders.
func Load() (*Lib, error) {
	lib, err := cu.Open([]string{"libcudnn.so.9", "libcudnn.so.8"}, cu.LibraryDirs())
	if err != nil {
		return nil, fmt.Errorf("cuDNN: %w", err)
	}
	l := &Lib{Path: lib.Path}
	syms := []struct {
		p    *uintptr
		name string
	}{
		{&l.fCreate, "cudnnCreate"}, {&l.fDestroy, "cudnnDestroy"}, {&l.fSetStream, "cudnnSetStream"},
		{&l.fCreateTensor, "cudnnCreateTensorDescriptor"}, {&l.fSetTensor4d, "cudnnSetTensor4dDescriptor"},
		{&l.fDestroyTensor, "cudnnDestroyTensorDescriptor"},
		{&l.fCreateFilter, "cudnnCreateFilterDescriptor"}, {&l.fSetFilter4d, "cudnnSetFilter4dDescriptor"},
		{&l.fDestroyFilter, "cudnnDestroyFilterDescriptor"},
		{&l.fCreateConv, "cudnnCreateConvolutionDescriptor"}, {&l.fSetConv2d, "cudnnSetConvolution2dDescriptor"},
		{&l.fSetConvMath, "cudnnSetConvolutionMathType"}, {&l.fDestroyConv, "cudnnDestroyConvolutionDescriptor"},
		{&l.fFindFwdEx, "cudnnFindConvolutionForwardAlgorithmEx"},
		{&l.fGetFwdWorkspace, "cudnnGetConvolutionForwardWorkspaceSize"},
		{&l.fConvFwd, "cudnnConvolutionForward"},
	}
	for _, s := range syms {
		p, err := lib.Symbol(s.name)
		if err != nil {
			return nil, fmt.Errorf("cuDNN: %w", err)
		}
		*s.p = p
	}
	// The fused convolution + bias (+ residual) call is optional.
	if p, err := lib.Symbol("cudnnConvolutionBiasActivationForward"); err == nil {
		c, err1 := lib.Symbol("cudnnCreateActivationDescriptor")
		d, err2 := lib.Symbol("cudnnDestroyActivationDescriptor")
		set, err3 := lib.Symbol("cudnnSetActivationDescriptor")
		if err1 == nil && err2 == nil && err3 == nil {
			l.fBiasAct, l.fCreateAct, l.fDestroyAct = p, c, d
			purego.RegisterFunc(&l.setAct, set) // takes a double: needs the float-aware path
		}
	}
	if p, err := lib.Symbol("cudnnGetVersion"); err == nil {
		v, _, _ := purego.SyscallN(p)
		l.Version = int(v)
	}
	return l, nil
}

//go:uintptrescapes
func (l *Lib) call(op string, fn uintptr, args ...uintptr) error {
	r, _, _ := purego.SyscallN(fn, args...)
	if s := int32(r); s != statusSuccess {
		return &Error{Op: op, Status: int(s)}
	}
	return nil
}

// Handle is a cuDNN context for the CUDA context current at creation.
type Handle uintptr

// Create makes a handle that enqueues on stream s.
func (l *Lib) Create(s cu.Stream) (Handle, error) {
	var h uintptr
	if err := l.call("cudnnCreate", l.fCreate, uintptr(unsafe.Pointer(&h))); err != nil {
		return 0, err
	}
	if err := l.call("cudnnSetStream", l.fSetStream, h, uintptr(s)); err != nil {
		_ = l.call("cudnnDestroy", l.fDestroy, h)
		return 0, err
	}
	return Handle(h), nil
}

// Destroy releases a handle.
func (l *Lib) Destroy(h Handle) { _ = l.call("cudnnDestroy", l.fDestroy, uintptr(h)) }

// Conv is a configured 2-D convolution over channels-last images with
// channels-last (KRSC) filters, cross-correlation as deep learning means it,
// float32 accumulation and tensor-core math.
type Conv struct {
	l    *Lib
	x, y uintptr // tensor descriptors
	w    uintptr // filter descriptor
	c    uintptr // convolution descriptor
	bias uintptr // (1, K, 1, 1) bias descriptor, for the fused call
	act  uintptr // identity activation descriptor, for the fused call
}

// ConvShape is the geometry of a convolution; padding is symmetric.
type ConvShape struct {
	DataType            int
	N, C, H, W, K, R, S int
	PadH, PadW, Stride  int
	OutH, OutW          int
}

// NewConv makes the descriptors for shape.
func (l *Lib) NewConv(sh ConvShape) (cv *Conv, err error) {
	cv = &Conv{l: l}
	defer func() {
		if err != nil {
			cv.Close()
			cv = nil
		}
	}()
	if err = l.call("cudnnCreateTensorDescriptor", l.fCreateTensor, uintptr(unsafe.Pointer(&cv.x))); err != nil {
		return
	}
	if err = l.call("cudnnCreateTensorDescriptor", l.fCreateTensor, uintptr(unsafe.Pointer(&cv.y))); err != nil {
		return
	}
	if err = l.call("cudnnCreateFilterDescriptor", l.fCreateFilter, uintptr(unsafe.Pointer(&cv.w))); err != nil {
		return
	}
	if err = l.call("cudnnCreateConvolutionDescriptor", l.fCreateConv, uintptr(unsafe.Pointer(&cv.c))); err != nil {
		return
	}
	dt := uintptr(sh.DataType)
	if err = l.call("cudnnSetTensor4dDescriptor(x)", l.fSetTensor4d, cv.x, formatNHWC, dt, uintptr(sh.N), uintptr(sh.C), uintptr(sh.H), uintptr(sh.W)); err != nil {
		return
	}
	if err = l.call("cudnnSetTensor4dDescriptor(y)", l.fSetTensor4d, cv.y, formatNHWC, dt, uintptr(sh.N), uintptr(sh.K), uintptr(sh.OutH), uintptr(sh.OutW)); err != nil {
		return
	}
	if err = l.call("cudnnSetFilter4dDescriptor", l.fSetFilter4d, cv.w, dt, formatNHWC, uintptr(sh.K), uintptr(sh.C), uintptr(sh.R), uintptr(sh.S)); err != nil {
		return
	}
	if err = l.call("cudnnSetConvolution2dDescriptor", l.fSetConv2d, cv.c, uintptr(sh.PadH), uintptr(sh.PadW), uintptr(sh.Stride), uintptr(sh.Stride), 1, 1, crossCorrelation, DataFloat); err != nil {
		return
	}
	math := uintptr(tensorOpMath)
	if sh.DataType == DataFloat {
		math = fmaMath // float32 stays float32 (no TF32)
	}
	if err = l.call("cudnnSetConvolutionMathType", l.fSetConvMath, cv.c, math); err != nil {
		return
	}
	if l.fBiasAct != 0 {
		if err = l.call("cudnnCreateTensorDescriptor", l.fCreateTensor, uintptr(unsafe.Pointer(&cv.bias))); err != nil {
			return
		}
		if err = l.call("cudnnSetTensor4dDescriptor(bias)", l.fSetTensor4d, cv.bias, formatNHWC, dt, 1, uintptr(sh.K), 1, 1); err != nil {
			return
		}
		if err = l.call("cudnnCreateActivationDescriptor", l.fCreateAct, uintptr(unsafe.Pointer(&cv.act))); err != nil {
			return
		}
		if s := l.setAct(cv.act, activationIdentity, 0, 0); s != statusSuccess {
			err = &Error{Op: "cudnnSetActivationDescriptor", Status: int(s)}
			return
		}
	}
	return
}

const activationIdentity = 5

// CanFuse reports whether ForwardBias is available.
func (cv *Conv) CanFuse() bool { return cv.l.fBiasAct != 0 && cv.act != 0 }

// ForwardBias enqueues y = conv(x, w) + bias (+ z when z is not 0) in one
// call; bias holds K elements of the data type. cuDNN supports it for the
// implicit precomputed GEMM algorithm (1).
func (cv *Conv) ForwardBias(h Handle, algo int, x, w, y, z, bias, ws cu.DevicePtr, workspace int64) error {
	l := cv.l
	if !cv.CanFuse() {
		return &Error{Op: "cudnnConvolutionBiasActivationForward", Status: statusNotSupport}
	}
	alphas := &[2]float32{1, 0}
	if z != 0 {
		alphas[1] = 1
	} else {
		z = y
	}
	return l.call("cudnnConvolutionBiasActivationForward", l.fBiasAct, uintptr(h), uintptr(unsafe.Pointer(&alphas[0])),
		cv.x, uintptr(x), cv.w, uintptr(w), cv.c, uintptr(algo), uintptr(ws), uintptr(workspace),
		uintptr(unsafe.Pointer(&alphas[1])), cv.y, uintptr(z), cv.bias, uintptr(bias), cv.act, cv.y, uintptr(y))
}

// Close releases the descriptors.
func (cv *Conv) Close() {
	l := cv.l
	if cv.x != 0 {
		_ = l.call("", l.fDestroyTensor, cv.x)
	}
	if cv.y != 0 {
		_ = l.call("", l.fDestroyTensor, cv.y)
	}
	if cv.w != 0 {
		_ = l.call("", l.fDestroyFilter, cv.w)
	}
	if cv.c != 0 {
		_ = l.call("", l.fDestroyConv, cv.c)
	}
	if cv.bias != 0 {
		_ = l.call("", l.fDestroyTensor, cv.bias)
	}
	if cv.act != 0 {
		_ = l.call("", l.fDestroyAct, cv.act)
	}
}

// AlgoPerf is one algorithm cuDNN measured.
type AlgoPerf struct {
	Algo      int
	Time      float32 // milliseconds
	Workspace int64
}

// Find runs every applicable algorithm on the given buffers (which it
// overwrites) and returns those that succeeded with at most workspace
// bytes, fastest first.
func (cv *Conv) Find(h Handle, x, w, y, ws cu.DevicePtr, workspace int64) ([]AlgoPerf, error) {
	var n int32
	var buf [maxAlgos * algoPerfSize]byte
	l := cv.l
	if err := l.call("cudnnFindConvolutionForwardAlgorithmEx", l.fFindFwdEx, uintptr(h), cv.x, uintptr(x), cv.w, uintptr(w), cv.c,
		cv.y, uintptr(y), maxAlgos, uintptr(unsafe.Pointer(&n)), uintptr(unsafe.Pointer(&buf[0])), uintptr(ws), uintptr(workspace)); err != nil {
		return nil, err
	}
	var out []AlgoPerf
	for i := 0; i < int(n) && i < maxAlgos; i++ {
		p := buf[i*algoPerfSize:]
		algo := int(int32(le32(p[0:])))
		status := int(int32(le32(p[4:])))
		t := float32frombits(le32(p[8:]))
		mem := int64(le64(p[16:]))
		if status == statusSuccess && mem <= workspace && t >= 0 {
			out = append(out, AlgoPerf{Algo: algo, Time: t, Workspace: mem})
		}
	}
	return out, nil
}

// Forward enqueues y = conv(x, w) with algorithm algo.
func (cv *Conv) Forward(h Handle, algo int, x, w, y, ws cu.DevicePtr, workspace int64) error {
	l := cv.l
	ab := &[2]float32{1, 0}
	return l.call("cudnnConvolutionForward", l.fConvFwd, uintptr(h), uintptr(unsafe.Pointer(&ab[0])), cv.x, uintptr(x), cv.w, uintptr(w),
		cv.c, uintptr(algo), uintptr(ws), uintptr(workspace), uintptr(unsafe.Pointer(&ab[1])), cv.y, uintptr(y))
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
func le64(b []byte) uint64 { return uint64(le32(b)) | uint64(le32(b[4:]))<<32 }

func float32frombits(v uint32) float32 { return *(*float32)(unsafe.Pointer(&v)) }
