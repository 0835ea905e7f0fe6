package cuda

import (
	"math"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda/internal/cublas"
)

// flashDims are the padded head sizes the fused attention kernel exists for.
var flashDims = [...]int{16, 32, 48, 64, 80, 96, 128, 160}

func flashDim(d int) int {
	for _, p := range flashDims {
		if d <= p {
			return p
		}
	}
	return 0
}

// Attention computes softmax(scale·q·kᵀ)·v per head: q (B, Lq, H·D), k and
// v (B, Lk, H·D) → (B, Lq, H·D); with Causal, query i sees keys j ≤ i. In
// fp16/bf16 with D % 8 == 0 and D ≤ 160 it runs the fused kernel, which
// never writes scores to memory; otherwise scores for a chunk of queries
// (at most Options.ScoreBytes) go through cuBLAS and a softmax kernel, in
// float32.
func (b *Backend) Attention(q, k, v *tensor.Tensor, p backend.AttentionParams) *tensor.Tensor {
	const op = "Attention"
	qs, ks, vs := b.st(op, q), b.st(op, k), b.st(op, v)
	if len(q.Shape()) != 3 || len(k.Shape()) != 3 || len(v.Shape()) != 3 {
		fail(op, "q %s, k %s, v %s must be 3-D (B, L, H·D)", q.Shape(), k.Shape(), v.Shape())
	}
	if !k.Shape().Equal(v.Shape()) {
		fail(op, "k %s and v %s differ", k.Shape(), v.Shape())
	}
	bn, lq, f := q.Dim(0), q.Dim(1), q.Dim(2)
	lk := k.Dim(1)
	if k.Dim(0) != bn || k.Dim(2) != f {
		fail(op, "q %s and k %s: batch or features differ", q.Shape(), k.Shape())
	}
	if p.Heads < 1 || f%p.Heads != 0 {
		fail(op, "features %d of q %s do not divide into %d heads", f, q.Shape(), p.Heads)
	}
	if lk == 0 && lq > 0 {
		fail(op, "no keys: k %s", k.Shape())
	}
	dt := q.DType()
	out := b.newOut(op, q.Shape(), dt)
	if q.Numel() == 0 {
		return b.wrap(q.Shape(), dt, rowMajor, out)
	}
	h := p.Heads
	d := f / h
	qb := b.logical(q, qs)
	kb := b.asType(b.logical(k, ks), k.DType(), dt, k.Numel())
	vb := b.asType(b.logical(v, vs), v.DType(), dt, v.Numel())
	causal := 0
	if p.Causal {
		causal = 1
	}
	if dt != tensor.F32 && d%8 == 0 && flashDim(d) > 0 && b.d.opts.Attention != "gemm" {
		if bn > 65535 || h > 65535 {
			fail(op, "batch %d or heads %d exceed the grid limit", bn, h)
		}
		g := attnGeom{dt: dt, bn: bn, lq: lq, lk: lk, h: h, d: d, causal: causal, scale: p.Scale}
		if pl := b.planAttention(g); pl.hopper {
			b.hopperAttention(out, qb, kb, vb, g, pl.layout, 0)
		} else {
			b.flashAttention(out, qb, kb, vb, g)
		}
		return b.wrap(q.Shape(), dt, rowMajor, out)
	}
	elt := int64(dt.Size())
	qc := int(min(int64(lq), max(1, b.d.opts.ScoreBytes/int64(h*lk*4))))
	for bi := 0; bi < bn; bi++ {
		for q0 := 0; q0 < lq; q0 += qc {
			rows := min(qc, lq-q0)
			s := b.d.newBuffer(int64(h*rows*lk) * 4)
			pr := b.d.newBuffer(int64(h*rows*lk) * elt)
			g1 := cublas.Gemm{TransA: cublas.OpT, TransB: cublas.OpN, M: lk, N: rows, K: d, Alpha: p.Scale,
				AType: blasType(dt), LDA: f, StrideA: int64(d), BType: blasType(dt), LDB: f, StrideB: int64(d),
				CType: cublas.R32F, LDC: lk, StrideC: int64(rows * lk), Batch: h, Compute: cublas.Compute32F}
			b.d.gemmRecord(g1, bufRef{buf: kb, off: int64(bi*lk*f) * elt}, bufRef{buf: qb, off: int64((bi*lq+q0)*f) * elt}, bufRef{buf: s})
			cfg := launchCfg{grid: [3]uint32{uint32(h * rows), 1, 1}, block: [3]uint32{256, 1, 1}}
			b.d.launch("softmax_rows"+suffix(dt), cfg, pr, pbuf(pr), pbuf(s), i32(lk), i32(causal), i32(q0), i32(rows))
			g2 := cublas.Gemm{TransA: cublas.OpN, TransB: cublas.OpN, M: d, N: rows, K: lk, Alpha: 1,
				AType: blasType(dt), LDA: f, StrideA: int64(d), BType: blasType(dt), LDB: lk, StrideB: int64(rows * lk),
				CType: blasType(dt), LDC: f, StrideC: int64(d), Batch: h, Compute: cublas.Compute32F}
			b.d.gemmRecord(g2, bufRef{buf: vb, off: int64(bi*lk*f) * elt}, bufRef{buf: pr}, bufRef{buf: out, off: int64((bi*lq+q0)*f) * elt})
		}
	}
	return b.wrap(q.Shape(), dt, rowMajor, out)
}

// attnGeom is one attention call's shape: q (bn, lq, h·d), k and v
// (bn, lk, h·d), all row-major with row stride h·d.
type attnGeom struct {
	dt            tensor.DType
	bn, lq, lk, h int
	d, causal     int
	scale         float32
}

// flashAttention launches the portable fused kernel (mma.sync) for g:
// flashw (128 query rows per block) for long sequences with small heads,
// else flashp (K/V double-buffered), else flash.
func (b *Backend) flashAttention(out, qb, kb, vb *buffer, g attnGeom) {
	dp, f := flashDim(g.d), g.h*g.d
	name, bm := "flashw", 128
	smem := 6 * 64 * (dp + 8) * 2 // 128 query rows, K and V double-buffered
	if dp > 64 || g.lq < 512 || smem > b.d.info.MaxSharedOpt || b.d.opts.Attention == "flashp" || b.d.opts.Attention == "flash1" {
		name, bm, smem = "flashp", 64, 5*64*(dp+8)*2
	}
	if smem > b.d.info.MaxSharedOpt || b.d.opts.Attention == "flash1" {
		name, bm, smem = "flash", 64, 2*64*(dp+8)*2
	}
	cfg := launchCfg{grid: [3]uint32{uint32((g.lq + bm - 1) / bm), uint32(g.h), uint32(g.bn)}, block: [3]uint32{128, 1, 1}, shmem: uint32(smem)}
	b.d.launch(name+itoa(dp)+suffix(g.dt), cfg, out, pbuf(out), pbuf(qb), pbuf(kb), pbuf(vb),
		i32(g.lq), i32(g.lk), i32(g.d), i32(f), i32(f), i32(f), i32(f), f32(g.scale*float32(math.Log2E)), i32(g.causal))
}

func itoa(v int) string {
	if v == 0 {
		return "0"
	}
	var buf [20]byte
	i := len(buf)
	for v > 0 {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	return string(buf[i:])
}
