package cublas

import (
	"fmt"
	"unsafe"

	"github.com/ebitengine/purego"
	"github.com/kiln-project/kiln/cuda/internal/cu"
)

// cuBLASLt descriptor attributes and epilogues used here.
const (
	ltDescTransA     = 3
	ltDescTransB     = 4
	ltDescEpilogue   = 7
	ltDescBiasPtr    = 8
	ltDescBiasType   = 26
	ltDescScaleA     = 17
	ltDescScaleB     = 18
	ltDescFastAccum  = 25
	ltPrefWorkspace  = 1
	ltEpilogueNone   = 1
	ltEpilogueBias   = 4
	ltHeuristicBytes = 96 // sizeof(cublasLtMatmulHeuristicResult_t)
	ltAlgoBytes      = 64 // sizeof(cublasLtMatmulAlgo_t)
)

// Lt is cuBLASLt, for matrix products with fused epilogues.
type Lt struct {
	fCreate, fDestroy                                        uintptr
	fDescCreate, fDescSet, fDescDestroy                      uintptr
	fLayoutCreate, fLayoutDestroy                            uintptr
	fPrefCreate, fPrefSet, fPrefDestroy, fHeuristic, fMatmul uintptr
}

// LoadLt binds cuBLASLt from the library Load opened.
func (l *Lib) LoadLt() (*Lt, error) {
	lib, err := cu.Open([]string{l.LtPath}, []string{""})
	if err != nil {
		return nil, fmt.Errorf("cuBLASLt: %w", err)
	}
	t := &Lt{}
	syms := []struct {
		p    *uintptr
		name string
	}{
		{&t.fCreate, "cublasLtCreate"}, {&t.fDestroy, "cublasLtDestroy"},
		{&t.fDescCreate, "cublasLtMatmulDescCreate"}, {&t.fDescSet, "cublasLtMatmulDescSetAttribute"},
		{&t.fDescDestroy, "cublasLtMatmulDescDestroy"},
		{&t.fLayoutCreate, "cublasLtMatrixLayoutCreate"}, {&t.fLayoutDestroy, "cublasLtMatrixLayoutDestroy"},
		{&t.fPrefCreate, "cublasLtMatmulPreferenceCreate"}, {&t.fPrefSet, "cublasLtMatmulPreferenceSetAttribute"},
		{&t.fPrefDestroy, "cublasLtMatmulPreferenceDestroy"},
		{&t.fHeuristic, "cublasLtMatmulAlgoGetHeuristic"}, {&t.fMatmul, "cublasLtMatmul"},
	}
	for _, s := range syms {
		if *s.p, err = lib.Symbol(s.name); err != nil {
			return nil, fmt.Errorf("cuBLASLt: %w", err)
		}
	}
	return t, nil
}

//go:uintptrescapes
func (t *Lt) call(op string, fn uintptr, args ...uintptr) error {
	r, _, _ := purego.SyscallN(fn, args...)
	if s := int32(r); s != 0 {
		return &Error{Op: op, Status: int(s)}
	}
	return nil
}

// LtHandle is a cuBLASLt context.
type LtHandle uintptr

// Create makes a cuBLASLt handle.
func (t *Lt) Create() (LtHandle, error) {
	var h uintptr
	err := t.call("cublasLtCreate", t.fCreate, uintptr(unsafe.Pointer(&h)))
	return LtHandle(h), err
}

// Destroy releases a handle.
func (t *Lt) Destroy(h LtHandle) { _ = t.call("", t.fDestroy, uintptr(h)) }

// LtShape is a product D (m×n) = op(A)·op(B) [+ C] [+ bias] in cuBLAS's
// column-major terms, all matrices of one type with float32 accumulation.
// With FP8, A and B are E4M3 instead (C, D and the bias stay Type), each
// with a float32 dequantisation scale in device memory: D = sA·sB·op(A)·op(B)
// [+ C] [+ bias], accumulated in cuBLASLt's fast fp8 mode.
type LtShape struct {
	TransA, TransB Operation
	M, N, K        int
	LDA, LDB, LDC  int
	Type           DataType
	Bias           bool // add a bias of M elements (of Type) per column
	FP8            bool
}

// LtPlan is a configured product with the algorithm cuBLASLt's heuristic
// picked.
type LtPlan struct {
	t             *Lt
	desc, a, b, c uintptr
	algo          [ltAlgoBytes]byte
	Workspace     int64
	bias, fp8     bool
}

// Plan configures shape with at most workspace bytes of workspace.
func (t *Lt) Plan(h LtHandle, sh LtShape, workspace int64) (p *LtPlan, err error) {
	p = &LtPlan{t: t, bias: sh.Bias, fp8: sh.FP8}
	defer func() {
		if err != nil {
			p.Close()
			p = nil
		}
	}()
	if err = t.call("cublasLtMatmulDescCreate", t.fDescCreate, uintptr(unsafe.Pointer(&p.desc)), uintptr(Compute32F), uintptr(R32F)); err != nil {
		return
	}
	ta, tb := int32(sh.TransA), int32(sh.TransB)
	if err = t.call("cublasLtMatmulDescSetAttribute(transa)", t.fDescSet, p.desc, ltDescTransA, uintptr(unsafe.Pointer(&ta)), 4); err != nil {
		return
	}
	if err = t.call("cublasLtMatmulDescSetAttribute(transb)", t.fDescSet, p.desc, ltDescTransB, uintptr(unsafe.Pointer(&tb)), 4); err != nil {
		return
	}
	epi := uint32(ltEpilogueNone)
	if sh.Bias {
		epi = ltEpilogueBias
		bt := int32(sh.Type)
		if err = t.call("cublasLtMatmulDescSetAttribute(bias type)", t.fDescSet, p.desc, ltDescBiasType, uintptr(unsafe.Pointer(&bt)), 4); err != nil {
			return
		}
	}
	if err = t.call("cublasLtMatmulDescSetAttribute(epilogue)", t.fDescSet, p.desc, ltDescEpilogue, uintptr(unsafe.Pointer(&epi)), 4); err != nil {
		return
	}
	in := sh.Type
	if sh.FP8 {
		in = R8FE4M3
		fast := int8(1)
		if err = t.call("cublasLtMatmulDescSetAttribute(fast accumulation)", t.fDescSet, p.desc, ltDescFastAccum, uintptr(unsafe.Pointer(&fast)), 1); err != nil {
			return
		}
	}
	rowsA, colsA := sh.M, sh.K
	if sh.TransA == OpT {
		rowsA, colsA = sh.K, sh.M
	}
	rowsB, colsB := sh.K, sh.N
	if sh.TransB == OpT {
		rowsB, colsB = sh.N, sh.K
	}
	layout := func(dst *uintptr, dt DataType, rows, cols, ld int) error {
		return t.call("cublasLtMatrixLayoutCreate", t.fLayoutCreate, uintptr(unsafe.Pointer(dst)), uintptr(dt), uintptr(rows), uintptr(cols), uintptr(ld))
	}
	if err = layout(&p.a, in, rowsA, colsA, sh.LDA); err != nil {
		return
	}
	if err = layout(&p.b, in, rowsB, colsB, sh.LDB); err != nil {
		return
	}
	if err = layout(&p.c, sh.Type, sh.M, sh.N, sh.LDC); err != nil {
		return
	}
	var pref uintptr
	if err = t.call("cublasLtMatmulPreferenceCreate", t.fPrefCreate, uintptr(unsafe.Pointer(&pref))); err != nil {
		return
	}
	defer t.call("", t.fPrefDestroy, pref)
	ws := uint64(workspace)
	if err = t.call("cublasLtMatmulPreferenceSetAttribute", t.fPrefSet, pref, ltPrefWorkspace, uintptr(unsafe.Pointer(&ws)), 8); err != nil {
		return
	}
	var res [ltHeuristicBytes]byte
	var n int32
	if err = t.call("cublasLtMatmulAlgoGetHeuristic", t.fHeuristic, uintptr(h), p.desc, p.a, p.b, p.c, p.c, pref, 1,
		uintptr(unsafe.Pointer(&res[0])), uintptr(unsafe.Pointer(&n))); err != nil {
		return
	}
	if n < 1 {
		return p, fmt.Errorf("cublasLtMatmulAlgoGetHeuristic: no algorithm for %+v", sh)
	}
	copy(p.algo[:], res[:ltAlgoBytes])
	p.Workspace = int64(*(*uint64)(unsafe.Pointer(&res[ltAlgoBytes])))
	return p, nil
}

// Close releases the descriptors.
func (p *LtPlan) Close() {
	t := p.t
	if p.desc != 0 {
		_ = t.call("", t.fDescDestroy, p.desc)
	}
	for _, l := range []uintptr{p.a, p.b, p.c} {
		if l != 0 {
			_ = t.call("", t.fLayoutDestroy, l)
		}
	}
}

// Run enqueues D = op(A)·op(B) + beta·C (+ bias) on stream s; C may be D.
// sa and sb point at the float32 scales of an FP8 plan's A and B (else
// unused).
func (p *LtPlan) Run(h LtHandle, a, b, c, d, bias, sa, sb cu.DevicePtr, beta float32, ws cu.DevicePtr, wsBytes int64, s cu.Stream) error {
	t := p.t
	if p.fp8 {
		for _, sc := range []struct {
			attr uintptr
			p    uint64
		}{{ltDescScaleA, uint64(sa)}, {ltDescScaleB, uint64(sb)}} {
			if err := t.call("cublasLtMatmulDescSetAttribute(scale)", t.fDescSet, p.desc, sc.attr, uintptr(unsafe.Pointer(&sc.p)), 8); err != nil {
				return err
			}
		}
	}
	if p.bias {
		bp := uint64(bias)
		if err := t.call("cublasLtMatmulDescSetAttribute(bias)", t.fDescSet, p.desc, ltDescBiasPtr, uintptr(unsafe.Pointer(&bp)), 8); err != nil {
			return err
		}
	}
	ab := &[2]float32{1, beta}
	return t.call("cublasLtMatmul", t.fMatmul, uintptr(h), p.desc, uintptr(unsafe.Pointer(&ab[0])), uintptr(a), p.a, uintptr(b), p.b,
		uintptr(unsafe.Pointer(&ab[1])), uintptr(c), p.c, uintptr(d), p.c, uintptr(unsafe.Pointer(&p.algo[0])), uintptr(ws), uintptr(wsBytes), uintptr(s))
}
