package cpu

import (
	"sync/atomic"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// Attention computes softmax(scale·q·kᵀ)·v per head: q (B, Lq, H·D), k and
// v (B, Lk, H·D) → (B, Lq, H·D). With Causal, query i sees keys j ≤ i
// (aligned at the top-left, as PyTorch's is_causal).
func (be *Backend) Attention(q, k, v *tensor.Tensor, p backend.AttentionParams) *tensor.Tensor {
	const op = "Attention"
	qd, kd, vd := data(op, q), data(op, k), data(op, v)
	if len(q.Shape()) != 3 || len(k.Shape()) != 3 || len(v.Shape()) != 3 {
		backend.Fail(op, "q %s, k %s, v %s must be 3-D (B, L, H·D)", q.Shape(), k.Shape(), v.Shape())
	}
	if !k.Shape().Equal(v.Shape()) {
		backend.Fail(op, "k %s and v %s differ", k.Shape(), v.Shape())
	}
	bn, lq, f := q.Dim(0), q.Dim(1), q.Dim(2)
	lk := k.Dim(1)
	if k.Dim(0) != bn || k.Dim(2) != f {
		backend.Fail(op, "q %s and k %s: batch or features differ", q.Shape(), k.Shape())
	}
	if p.Heads < 1 || f%p.Heads != 0 {
		backend.Fail(op, "features %d of q %s do not divide into %d heads", f, q.Shape(), p.Heads)
	}
	if lk == 0 && lq > 0 {
		backend.Fail(op, "no keys: k %s", k.Shape())
	}
	out, od := be.newTensor(q.Shape())
	be.attention(qd, kd, vd, od, bn, lq, lk, f, p)
	return out
}

// attentionBlock is the number of query rows whose scores one worker holds
// at a time.
const attentionBlock = 32

// attention works per (batch, head). Each head's keys and values are packed
// once for the GEMM; then tasks of one block of query rows compute the
// block's scores S = q·kᵀ, turn each row into softmax numerators in place,
// multiply by v and divide by the row sums. A worker never holds more than
// one block of one head's scores.
func (be *Backend) attention(qd, kd, vd, od []float32, bn, lq, lk, f int, p backend.AttentionParams) {
	h := p.Heads
	d := f / h
	qb := attentionBlock
	for qb > 8 && bn*h*((lq+qb-1)/qb) < 4*be.threads {
		qb /= 2
	}
	kernS := be.kernel
	kernO := be.kernel
	if be.kernel.simd {
		kernO = narrowKernel(be.kernel, qb, d, availableKernels())
	}
	// Pack every head's keys (as Kᵀ, d × lk) and values (lk × d) into
	// buffers from the activation pool.
	heads := bn * h
	kSize := d * ((lk + kernS.nr - 1) / kernS.nr * kernS.nr)
	vSize := lk * ((d + kernO.nr - 1) / kernO.nr * kernO.nr)
	kbuf, vbuf := be.pool.get(heads*kSize), be.pool.get(heads*vSize)
	defer be.pool.put(kbuf)
	defer be.pool.put(vbuf)
	kp := make([]packedB, heads)
	vp := make([]packedB, heads)
	be.parallelFor(heads, 1, func(lo, hi int) {
		for bh := lo; bh < hi; bh++ {
			b, hd := bh/h, bh%h
			off := b*lk*f + hd*d
			kp[bh] = packFull(kbuf[bh*kSize:(bh+1)*kSize:(bh+1)*kSize], matBT{data: kd[off:], ld: f, n: lk}, d, lk, kernS.nr)
			vp[bh] = packFull(vbuf[bh*vSize:(bh+1)*vSize:(bh+1)*vSize], matB{data: vd[off:], ld: f, n: d}, lk, d, kernO.nr)
		}
	})
	// Rows of scores are read in place by the second product; a stride that
	// is not a multiple of 256 floats keeps them from sharing cache sets.
	ldS := (lk + 15) / 16 * 16
	if ldS%256 == 0 {
		ldS += 16
	}
	blocks := (lq + qb - 1) / qb
	tasks := heads * blocks
	var next atomic.Int64
	be.parallelFor(min(be.threads, tasks), 1, func(_, _ int) {
		w := be.work.get()
		defer be.work.put(w)
		sp, _ := be.scores.Get().(*[]float32)
		if sp == nil || len(*sp) < qb*ldS {
			s := make([]float32, qb*ldS)
			sp = &s
		}
		defer be.scores.Put(sp)
		sums := make([]float32, qb)
		for {
			t := int(next.Add(1) - 1)
			if t >= tasks {
				return
			}
			blk, bh := t%blocks, t/blocks
			b, hd := bh/h, bh%h
			i0 := blk * qb
			rows := min(qb, lq-i0)
			s := (*sp)[:rows*ldS]
			clear(s)
			qoff := (b*lq+i0)*f + hd*d
			gemmPacked(kernS, w, rows, qd[qoff:], f, kp[bh], s, ldS)
			for r := 0; r < rows; r++ {
				row := s[r*ldS : r*ldS+lk]
				valid := row
				if p.Causal {
					valid = row[:min(lk, i0+r+1)]
					clear(row[len(valid):])
				}
				var shift float32
				if p.Scale >= 0 {
					shift = maxf(valid, be.vec) * p.Scale
				} else {
					shift = -maxf(negate(valid), be.vec) * p.Scale
					negate(valid)
				}
				sums[r] = expScaleSum(valid, p.Scale, shift, be.vec)
			}
			o := od[qoff:]
			for r := 0; r < rows; r++ {
				clear(o[r*f : r*f+d])
			}
			gemmPacked(kernO, w, rows, s, ldS, vp[bh], o, f)
			for r := 0; r < rows; r++ {
				inv := 1 / sums[r]
				orow := o[r*f : r*f+d]
				for i := range orow {
					orow[i] *= inv
				}
			}
		}
	})
}

// negate flips the sign of every element of x in place and returns x.
func negate(x []float32) []float32 {
	for i := range x {
		x[i] = -x[i]
	}
	return x
}
