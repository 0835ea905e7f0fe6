// Package cublas binds the cuBLAS functions Kiln uses for matrix products
// (fp16/bf16 tensor cores with fp32 accumulation, strided-batched products
// for attention), opened with dlopen at run time: libcublasLt and libcublas
// version 13, then 12.
package cublas

import (
	"fmt"
	"unsafe"

	"github.com/ebitengine/purego"
	"github.com/kiln-project/kiln/cuda/internal/cu"
)

// Operation says whether a matrix operand is transposed.
type Operation int32

// Operations.
const (
	OpN Operation = 0
	OpT Operation = 1
)

// DataType is a cudaDataType value.
type DataType int32

// Data types.
const (
	R32F  DataType = 0
	R16F  DataType = 2
	R16BF DataType = 14
	// R8FE4M3 is FP8 E4M3 (CUDA_R_8F_E4M3), for cuBLASLt's scaled fp8 products.
	R8FE4M3 DataType = 28
)

// ComputeType is a cublasComputeType_t value.
type ComputeType int32

// Compute types.
const (
	Compute32F         ComputeType = 68
	Compute32FPedantic ComputeType = 69
	Compute32FFastTF32 ComputeType = 77
)

// Math modes (cublasMath_t).
const (
	DefaultMath  = 0
	PedanticMath = 2
)

// gemmDefault is CUBLAS_GEMM_DEFAULT.
const gemmDefault = -1

// Error is a failed cuBLAS call.
type Error struct {
	Op     string
	Status int
}

// Error names the call and the cuBLAS status, by number and name.
func (e *Error) Error() string {
	return fmt.Sprintf("%s: cublas status %d (%s)", e.Op, e.Status, statusName(e.Status))
}

// Is matches cu.ErrOutOfMemory for CUBLAS_STATUS_ALLOC_FAILED.
func (e *Error) Is(target error) bool { return target == cu.ErrOutOfMemory && e.Status == 3 }

func statusName(s int) string {
	switch s {
	case 1:
		return "not initialized"
	case 3:
		return "allocation failed"
	case 7:
		return "invalid value"
	case 8:
		return "architecture mismatch"
	case 11:
		return "mapping error"
	case 13:
		return "execution failed"
	case 14:
		return "internal error"
	case 15:
		return "not supported"
	}
	return "unknown"
}

// Lib is an opened cuBLAS.
type Lib struct {
	Path, LtPath string
	Major        int

	fCreate, fDestroy, fSetStream, fSetWorkspace, fSetMathMode, fGetVersion uintptr
	fGemmEx, fGemmStridedBatchedEx                                          uintptr
}

// Load opens libcublasLt and libcublas (13, then 12) from the CUDA library
// folders.
func Load() (*Lib, error) {
	dirs := cu.LibraryDirs()
	var lastErr error
	for _, major := range []int{13, 12} {
		lt, err := cu.Open([]string{fmt.Sprintf("libcublasLt.so.%d", major)}, dirs)
		if err != nil {
			lastErr = err
			continue
		}
		lib, err := cu.Open([]string{fmt.Sprintf("libcublas.so.%d", major)}, dirs)
		if err != nil {
			lastErr = err
			continue
		}
		l := &Lib{Path: lib.Path, LtPath: lt.Path, Major: major}
		syms := []struct {
			p    *uintptr
			name string
		}{
			{&l.fCreate, "cublasCreate_v2"}, {&l.fDestroy, "cublasDestroy_v2"},
			{&l.fSetStream, "cublasSetStream_v2"}, {&l.fSetWorkspace, "cublasSetWorkspace_v2"},
			{&l.fSetMathMode, "cublasSetMathMode"}, {&l.fGetVersion, "cublasGetVersion_v2"},
			{&l.fGemmEx, "cublasGemmEx"}, {&l.fGemmStridedBatchedEx, "cublasGemmStridedBatchedEx"},
		}
		for _, s := range syms {
			p, err := lib.Symbol(s.name)
			if err != nil {
				return nil, fmt.Errorf("cuBLAS: %w", err)
			}
			*s.p = p
		}
		return l, nil
	}
	return nil, fmt.Errorf("cuBLAS 13 or 12 not found: %w", lastErr)
}

//go:uintptrescapes
func (l *Lib) call(op string, fn uintptr, args ...uintptr) error {
	r, _, _ := purego.SyscallN(fn, args...)
	if s := int32(r); s != 0 {
		return &Error{Op: op, Status: int(s)}
	}
	return nil
}

// Handle is a cuBLAS context, bound to the CUDA context current when it was
// created. Use it from that context's thread only.
type Handle uintptr

// Create makes a handle in the current CUDA context.
func (l *Lib) Create() (Handle, error) {
	var h uintptr
	err := l.call("cublasCreate", l.fCreate, uintptr(unsafe.Pointer(&h)))
	return Handle(h), err
}

// Destroy releases a handle.
func (l *Lib) Destroy(h Handle) error { return l.call("cublasDestroy", l.fDestroy, uintptr(h)) }

// Version returns cuBLAS's version number (e.g. 130100).
func (l *Lib) Version(h Handle) (int, error) {
	var v int32
	err := l.call("cublasGetVersion", l.fGetVersion, uintptr(h), uintptr(unsafe.Pointer(&v)))
	return int(v), err
}

// SetStream makes h enqueue on s.
func (l *Lib) SetStream(h Handle, s cu.Stream) error {
	return l.call("cublasSetStream", l.fSetStream, uintptr(h), uintptr(s))
}

// SetWorkspace gives h a device workspace so that it never allocates (which
// would break CUDA graph capture).
func (l *Lib) SetWorkspace(h Handle, p cu.DevicePtr, n int64) error {
	return l.call("cublasSetWorkspace", l.fSetWorkspace, uintptr(h), uintptr(p), uintptr(n))
}

// SetMathMode sets the cublasMath_t mode.
func (l *Lib) SetMathMode(h Handle, mode int) error {
	return l.call("cublasSetMathMode", l.fSetMathMode, uintptr(h), uintptr(mode))
}

// Gemm describes C = alpha·op(A)·op(B) + beta·C in cuBLAS's column-major
// convention, optionally strided-batched (Batch > 1).
type Gemm struct {
	TransA, TransB Operation
	M, N, K        int
	Alpha, Beta    float32
	A              cu.DevicePtr
	AType          DataType
	LDA            int
	StrideA        int64
	B              cu.DevicePtr
	BType          DataType
	LDB            int
	StrideB        int64
	C              cu.DevicePtr
	CType          DataType
	LDC            int
	StrideC        int64
	Batch          int
	Compute        ComputeType
}

// Run enqueues the product on h's stream.
func (l *Lib) Run(h Handle, g *Gemm) error {
	// alpha and beta are read by cuBLAS during the call (host pointer mode).
	scal := &[2]float32{g.Alpha, g.Beta}
	algo := int32(gemmDefault)
	if g.Batch <= 1 {
		return l.call("cublasGemmEx", l.fGemmEx, uintptr(h), uintptr(g.TransA), uintptr(g.TransB),
			uintptr(g.M), uintptr(g.N), uintptr(g.K), uintptr(unsafe.Pointer(&scal[0])),
			uintptr(g.A), uintptr(g.AType), uintptr(g.LDA),
			uintptr(g.B), uintptr(g.BType), uintptr(g.LDB),
			uintptr(unsafe.Pointer(&scal[1])),
			uintptr(g.C), uintptr(g.CType), uintptr(g.LDC),
			uintptr(g.Compute), uintptr(algo))
	}
	return l.call("cublasGemmStridedBatchedEx", l.fGemmStridedBatchedEx, uintptr(h), uintptr(g.TransA), uintptr(g.TransB),
		uintptr(g.M), uintptr(g.N), uintptr(g.K), uintptr(unsafe.Pointer(&scal[0])),
		uintptr(g.A), uintptr(g.AType), uintptr(g.LDA), uintptr(g.StrideA),
		uintptr(g.B), uintptr(g.BType), uintptr(g.LDB), uintptr(g.StrideB),
		uintptr(unsafe.Pointer(&scal[1])),
		uintptr(g.C), uintptr(g.CType), uintptr(g.LDC), uintptr(g.StrideC),
		uintptr(g.Batch), uintptr(g.Compute), uintptr(algo))
}
