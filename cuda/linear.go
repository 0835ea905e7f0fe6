package cuda

import (
	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda/internal/cublas"
)

func blasType(dt tensor.DType) cublas.DataType {
	switch dt {
	case tensor.F16:
		return cublas.R16F
	case tensor.BF16:
		return cublas.R16BF
	}
	return cublas.R32F
}

// Linear computes x·wᵀ + b over the last dimension: x (..., K), w (N, K),
// b (N) or nil → (..., N).
func (b *Backend) Linear(x, w, bias *tensor.Tensor) *tensor.Tensor {
	const op = "Linear"
	xs, ws := b.st(op, x), b.st(op, w)
	sh := x.Shape()
	if len(sh) < 1 {
		fail(op, "x %s has no feature dimension", sh)
	}
	if len(w.Shape()) != 2 {
		fail(op, "weight %s is not 2-D (x %s)", w.Shape(), sh)
	}
	k, n := sh[len(sh)-1], w.Dim(0)
	if w.Dim(1) != k {
		fail(op, "x %s and weight %s: inner sizes %d and %d differ", sh, w.Shape(), k, w.Dim(1))
	}
	bb := b.f32Param(op, "bias", bias, n, w)
	dt := w.DType()
	osh := sh.Clone()
	osh[len(osh)-1] = n
	out := b.newOut(op, osh, dt)
	m := 0
	if k > 0 {
		m = x.Numel() / k
	} else {
		m = sh[:len(sh)-1].Numel()
	}
	if m == 0 || n == 0 {
		return b.wrap(osh, dt, rowMajor, out)
	}
	xb := b.asType(b.logical(x, xs), x.DType(), dt, x.Numel())
	if !b.linear8(out, xb, ws.buf, bb, m, n, k, dt) {
		b.matmulNT(out, xb, ws.buf, m, n, k, dt, bb, nil)
	}
	return b.wrap(osh, dt, rowMajor, out)
}

// matmulNT records out (m, n) = a (m, k) · w (n, k)ᵀ + bias (+ res), all
// row-major, by the planned method (Kiln's tensor-core kernel with the bias
// fused, or cuBLAS and a bias kernel).
func (b *Backend) matmulNT(out, a, w *buffer, m, n, k int, dt tensor.DType, bias, res *buffer) {
	if k == 0 {
		b.d.add(&record{kind: recMemset, dst: out, writes: out})
		if bias != nil || res != nil {
			b.biasAct(out, out, bias, m, n, dt, 0)
		}
		return
	}
	biasT := b.d.biasIn(bias, dt, n)
	p := b.planLinear(m, n, k, dt, bias != nil, biasT != nil)
	b.emitLinear(p, out, a, w, bias, biasT, m, n, k, dt)
	if res != nil {
		b.d.launch("add"+suffix(dt), b.d.grid1(m*n/vecN(dt)+1), out, pbuf(out), pbuf(out), pbuf(res), u32(m*n))
	}
}

// emitLinear records a matrix product by plan p; biasT is the bias in dt
// for cuBLASLt's epilogue (nil: apply the float32 bias with a kernel).
func (b *Backend) emitLinear(p linPlan, out, a, w *buffer, bias, biasT *buffer, m, n, k int, dt tensor.DType) {
	switch p.method {
	case linImplicit:
		b.implicitConv(out, a, w, bias, nil, dt, convGeom{h: 1, w: m, c: k, ho: 1, wo: m, bn: 1, cout: n, kh: 1, kw: 1, stride: 1}, p.tile)
		return
	case linLt:
		sh := cublas.LtShape{TransA: cublas.OpT, TransB: cublas.OpN, M: n, N: m, K: k, LDA: k, LDB: k, LDC: n, Type: blasType(dt)}
		if bias != nil && biasT != nil {
			sh.Bias = true
			b.d.ltRecord(sh, w, a, biasT, out)
			return
		}
		b.d.ltRecord(sh, w, a, nil, out)
		if bias != nil {
			b.biasAct(out, out, bias, m, n, dt, 0)
		}
		return
	}
	g := cublas.Gemm{TransA: cublas.OpT, TransB: cublas.OpN, M: n, N: m, K: k, Alpha: 1,
		AType: blasType(dt), LDA: k, BType: blasType(dt), LDB: k, CType: blasType(dt), LDC: n, Batch: 1, Compute: cublas.Compute32F}
	b.d.gemmRecord(g, bufRef{buf: w}, bufRef{buf: a}, bufRef{buf: out})
	if bias != nil {
		b.biasAct(out, out, bias, m, n, dt, 0)
	}
}

// biasAct records dst = act(x + bias) over rows × cols.
func (b *Backend) biasAct(dst, x, bias *buffer, rows, cols int, dt tensor.DType, act int) {
	b.d.launch("bias_act"+suffix(dt), b.d.grid1(rows*cols/vecN(dt)+1), dst, pbuf(dst), pbuf(x), pOpt(bias), pnull(), u32(rows), i32(cols), i32(act))
}

// implicitOK reports whether Kiln's implicit-GEMM kernel handles channels
// c (the reduction's innermost extent) and n outputs in dt.
func (b *Backend) implicitOK(dt tensor.DType, c, n int) bool {
	return (dt == tensor.F16 || dt == tensor.BF16) && c%32 == 0 && n%2 == 0
}

// convGeom is a convolution's geometry on a channels-last image.
type convGeom struct {
	bn, h, w, c    int
	ho, wo, cout   int
	kh, kw, stride int
	padT, padL     int
}

// implicitConv records Kiln's implicit-GEMM convolution kernel with the
// given tile ("" chooses by shape).
func (b *Backend) implicitConv(out, x, w, bias, res *buffer, dt tensor.DType, g convGeom, tile string) {
	m := g.bn * g.ho * g.wo
	k := g.kh * g.kw * g.c
	if tile == "" {
		tile = b.heuristicTile(m, g.cout)
	}
	name, bm, bnT, smem := "conv_64x64", 64, 64, 40960
	switch tile {
	case "128x128":
		name, bm, bnT, smem = "conv_128x128", 128, 128, 61440
	case "128x64":
		name, bm, bnT, smem = "conv_128x64", 128, 64, 46080
	}
	cfg := launchCfg{grid: [3]uint32{uint32((m + bm - 1) / bm), uint32((g.cout + bnT - 1) / bnT), 1}, block: [3]uint32{256, 1, 1}, shmem: uint32(smem)}
	b.d.launch(name+suffix(dt), cfg, out, pbuf(out), pbuf(x), pbuf(w), pOpt(bias), pOpt(res),
		i32(g.h), i32(g.w), i32(g.c), i32(g.ho), i32(g.wo), i32(m), i32(g.cout), i32(g.kw), i32(g.stride), i32(g.padT), i32(g.padL), i32(k))
}

// Conv2D convolves x (B, Cin, H, W) with w (Cout, Cin, kh, kw) and adds b
// (Cout) or nil, on channels-last images: 1×1 convolutions are one matrix
// product; others use the implicit-GEMM kernel where it applies (fp16/bf16,
// Cin % 32 == 0) and otherwise a patch matrix (im2col, in chunks) times the
// filters through cuBLAS.
func (b *Backend) Conv2D(x, w, bias *tensor.Tensor, p backend.Conv2DParams) *tensor.Tensor {
	const op = "Conv2D"
	xs, wst := b.st(op, x), b.st(op, w)
	xsh, wsh := x.Shape(), w.Shape()
	if len(xsh) != 4 || len(wsh) != 4 {
		fail(op, "x %s and weight %s must both be 4-D", xsh, wsh)
	}
	bn, cin, h, wd := xsh[0], xsh[1], xsh[2], xsh[3]
	cout, kh, kw := wsh[0], wsh[2], wsh[3]
	if wsh[1] != cin {
		fail(op, "x %s has %d channels, weight %s expects %d", xsh, cin, wsh, wsh[1])
	}
	if p.Stride < 1 {
		fail(op, "stride %d < 1 (x %s, weight %s)", p.Stride, xsh, wsh)
	}
	if p.PadTop < 0 || p.PadBottom < 0 || p.PadLeft < 0 || p.PadRight < 0 {
		fail(op, "negative padding %+v", p)
	}
	ph, pw := h+p.PadTop+p.PadBottom, wd+p.PadLeft+p.PadRight
	if kh > ph || kw > pw {
		fail(op, "kernel %dx%d larger than padded input %dx%d (x %s)", kh, kw, ph, pw, xsh)
	}
	bb := b.f32Param(op, "bias", bias, cout, w)
	dt := w.DType()
	ho, wo := (ph-kh)/p.Stride+1, (pw-kw)/p.Stride+1
	osh := tensor.Shape{bn, cout, ho, wo}
	out := b.newOut(op, osh, dt)
	if osh.Numel() == 0 {
		return b.wrap(osh, dt, nhwc, out)
	}
	xb := b.asType(b.channelsLast(x, xs), x.DType(), dt, x.Numel())
	wb := b.channelsLast(w, wst)
	g := convGeom{bn: bn, h: h, w: wd, c: cin, ho: ho, wo: wo, cout: cout, kh: kh, kw: kw, stride: p.Stride, padT: p.PadTop, padL: p.PadLeft}
	m := bn * ho * wo
	if kh == 1 && kw == 1 && p.Stride == 1 && p.PadTop == 0 && p.PadLeft == 0 && p.PadBottom == 0 && p.PadRight == 0 {
		if !b.linear8(out, xb, wb, bb, m, cout, cin, dt) {
			b.matmulNT(out, xb, wb, m, cout, cin, dt, bb, nil)
		}
	} else {
		biasT := b.d.biasIn(bb, dt, cout)
		b.emitConv(b.planConv(g, p.PadBottom, p.PadRight, dt, biasT != nil), out, xb, wb, bb, biasT, dt, g)
	}
	return b.wrap(osh, dt, nhwc, out)
}

// im2colConv builds the patch matrix in chunks of rows and multiplies each
// chunk by the filters.
func (b *Backend) im2colConv(out, x, w, bias *buffer, dt tensor.DType, g convGeom) {
	m := g.bn * g.ho * g.wo
	k := g.kh * g.kw * g.c
	elt := dt.Size()
	chunk := max(1, int((64<<20)/int64(k*elt)))
	for r0 := 0; r0 < m; r0 += chunk {
		rows := min(chunk, m-r0)
		col := b.d.newBuffer(int64(rows) * int64(k) * int64(elt))
		vec := 1
		if g.c%vecN(dt) == 0 {
			vec = vecN(dt)
		}
		b.d.launch("im2col"+suffix(dt), b.d.grid1(rows*g.kh*g.kw*g.c/vec), col, pbuf(col), pbuf(x),
			i32(g.h), i32(g.w), i32(g.c), i32(g.ho), i32(g.wo), i32(g.kh), i32(g.kw), i32(g.stride), i32(g.padT), i32(g.padL), u32(r0), u32(rows))
		gm := cublas.Gemm{TransA: cublas.OpT, TransB: cublas.OpN, M: g.cout, N: rows, K: k, Alpha: 1,
			AType: blasType(dt), LDA: k, BType: blasType(dt), LDB: k, CType: blasType(dt), LDC: g.cout, Batch: 1, Compute: cublas.Compute32F}
		b.d.gemmRecord(gm, bufRef{buf: w}, bufRef{buf: col}, bufRef{buf: out, off: int64(r0) * int64(g.cout) * int64(elt)})
	}
	if bias != nil {
		b.biasAct(out, out, bias, m, g.cout, dt, 0)
	}
}
