package cpu

import (
	"math"

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

// attention runs over (batch, head, query row) with one row of scores per
// worker at a time.
func (be *Backend) attention(qd, kd, vd, od []float32, bn, lq, lk, f int, p backend.AttentionParams) {
	h := p.Heads
	d := f / h
	be.parallelFor(bn*h*lq, max(1, 8192/max(1, lk*d)), func(lo, hi int) {
		scores := make([]float32, lk)
		acc := make([]float32, d)
		for idx := lo; idx < hi; idx++ {
			i := idx % lq
			hd := (idx / lq) % h
			b := idx / (lq * h)
			qi := qd[(b*lq+i)*f+hd*d : (b*lq+i)*f+hd*d+d]
			n := lk
			if p.Causal {
				n = min(lk, i+1)
			}
			sc := scores[:n]
			mx := float32(math.Inf(-1))
			for j := range sc {
				kj := kd[(b*lk+j)*f+hd*d : (b*lk+j)*f+hd*d+d]
				var s float32
				for t, qv := range qi {
					s += qv * kj[t]
				}
				s *= p.Scale
				sc[j] = s
				mx = max(mx, s)
			}
			var sum float32
			for j, s := range sc {
				e := float32(math.Exp(float64(s - mx)))
				sc[j] = e
				sum += e
			}
			clear(acc)
			for j, e := range sc {
				vj := vd[(b*lk+j)*f+hd*d : (b*lk+j)*f+hd*d+d]
				for t, vv := range vj {
					acc[t] += e * vv
				}
			}
			dst := od[(b*lq+i)*f+hd*d : (b*lq+i)*f+hd*d+d]
			inv := 1 / sum
			for t, a := range acc {
				dst[t] = a * inv
			}
		}
	})
}
