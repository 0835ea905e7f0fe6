package cpu

import (
	"math"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

var _ backend.TransformerOps = (*Backend)(nil)

// RMSNorm returns x / sqrt(mean(x²) + eps) · w over the last dimension (w
// may be nil), the mean accumulated in float64.
func (be *Backend) RMSNorm(x, w *tensor.Tensor, eps float32) *tensor.Tensor {
	const op = "RMSNorm"
	xd := data(op, x)
	if len(x.Shape()) < 1 {
		backend.Fail(op, "x %s has no feature dimension", x.Shape())
	}
	d := x.Dim(-1)
	wd := affine(op, "weight", w, d, x)
	out, od := be.newTensor(x.Shape())
	if d == 0 {
		return out
	}
	rows := x.Numel() / d
	be.parallelFor(rows, max(1, 4096/d), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			src, dst := xd[r*d:r*d+d], od[r*d:r*d+d]
			var ss float64
			for _, v := range src {
				ss += float64(v) * float64(v)
			}
			ms := ss/float64(d) + float64(eps)
			inv := float32(0)
			if ms > 0 {
				inv = float32(1 / math.Sqrt(ms))
			}
			if wd == nil {
				for i, v := range src {
					dst[i] = v * inv
				}
				continue
			}
			for i, v := range src {
				dst[i] = v * inv * wd[i]
			}
		}
	})
	return out
}

// Mul returns a·b elementwise.
func (be *Backend) Mul(a, b *tensor.Tensor) *tensor.Tensor {
	const op = "Mul"
	ad, bd := data(op, a), data(op, b)
	if !a.Shape().Equal(b.Shape()) {
		backend.Fail(op, "shapes %s and %s differ", a.Shape(), b.Shape())
	}
	out, od := be.newTensor(a.Shape())
	be.parallelFor(len(ad), elementGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			od[i] = ad[i] * bd[i]
		}
	})
	return out
}

// GELUTanh returns 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
func (be *Backend) GELUTanh(x *tensor.Tensor) *tensor.Tensor {
	const c = 0.7978845608028654 // sqrt(2/pi)
	return be.unary("GELUTanh", x, func(dst, src []float32) {
		for i, v := range src {
			f := float64(v)
			dst[i] = float32(0.5 * f * (1 + math.Tanh(c*(f+0.044715*f*f*f))))
		}
	})
}

// Rotary rotates each head of x (B, L, H·D) by the angles whose cosines
// and sines cos, sin (L, D/2) hold.
func (be *Backend) Rotary(x, cos, sin *tensor.Tensor, heads int, interleaved bool) *tensor.Tensor {
	const op = "Rotary"
	xd, cd, sd := data(op, x), data(op, cos), data(op, sin)
	if len(x.Shape()) != 3 || heads < 1 || x.Dim(2)%heads != 0 || (x.Dim(2)/heads)%2 != 0 {
		backend.Fail(op, "x %s: want (B, L, H·D) with %d heads of even size", x.Shape(), heads)
	}
	bn, l, f := x.Dim(0), x.Dim(1), x.Dim(2)
	d := f / heads
	half := d / 2
	want := tensor.Shape{l, half}
	if !cos.Shape().Equal(want) || !sin.Shape().Equal(want) {
		backend.Fail(op, "cos %s, sin %s: want %v for x %s", cos.Shape(), sin.Shape(), want, x.Shape())
	}
	out, od := be.newTensor(x.Shape())
	be.parallelFor(bn*l, max(1, 4096/f), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			p := r % l
			c, s := cd[p*half:(p+1)*half], sd[p*half:(p+1)*half]
			for h := 0; h < heads; h++ {
				src, dst := xd[r*f+h*d:r*f+(h+1)*d], od[r*f+h*d:r*f+(h+1)*d]
				for i := 0; i < half; i++ {
					a, b := 2*i, 2*i+1
					if !interleaved {
						a, b = i, i+half
					}
					x0, x1 := src[a], src[b]
					dst[a] = x0*c[i] - x1*s[i]
					dst[b] = x1*c[i] + x0*s[i]
				}
			}
		}
	})
	return out
}

// perRow checks x (B, L, D) against per-batch vectors (B, D).
func perRow(op string, x *tensor.Tensor, vs ...*tensor.Tensor) (bn, l, d int) {
	if len(x.Shape()) != 3 {
		backend.Fail(op, "x %s: want (B, L, D)", x.Shape())
	}
	bn, l, d = x.Dim(0), x.Dim(1), x.Dim(2)
	for _, v := range vs {
		if !v.Shape().Equal(tensor.Shape{bn, d}) {
			backend.Fail(op, "%s: want (%d, %d) for x %s", v.Shape(), bn, d, x.Shape())
		}
	}
	return bn, l, d
}

// Modulate returns x·(1 + scale) + shift.
func (be *Backend) Modulate(x, shift, scale *tensor.Tensor) *tensor.Tensor {
	const op = "Modulate"
	xd, shd, scd := data(op, x), data(op, shift), data(op, scale)
	bn, l, d := perRow(op, x, shift, scale)
	out, od := be.newTensor(x.Shape())
	be.parallelFor(bn*l, max(1, 4096/max(d, 1)), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			b := r / l
			sh, sc := shd[b*d:(b+1)*d], scd[b*d:(b+1)*d]
			src, dst := xd[r*d:(r+1)*d], od[r*d:(r+1)*d]
			for i, v := range src {
				dst[i] = v*(1+sc[i]) + sh[i]
			}
		}
	})
	return out
}

// AddGated returns x + gate·y.
func (be *Backend) AddGated(x, y, gate *tensor.Tensor) *tensor.Tensor {
	const op = "AddGated"
	xd, yd, gd := data(op, x), data(op, y), data(op, gate)
	if !x.Shape().Equal(y.Shape()) {
		backend.Fail(op, "x %s and y %s differ", x.Shape(), y.Shape())
	}
	bn, l, d := perRow(op, x, gate)
	out, od := be.newTensor(x.Shape())
	be.parallelFor(bn*l, max(1, 4096/max(d, 1)), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			g := gd[(r/l)*d : (r/l+1)*d]
			xs, ys, dst := xd[r*d:(r+1)*d], yd[r*d:(r+1)*d], od[r*d:(r+1)*d]
			for i := range dst {
				dst[i] = xs[i] + g[i]*ys[i]
			}
		}
	})
	return out
}

// split returns the sizes before, at and after dimension dim of s.
func split(op string, s tensor.Shape, dim int) (outer, n, inner int) {
	if dim < 0 || dim >= len(s) {
		backend.Fail(op, "dimension %d out of range for %s", dim, s)
	}
	outer, inner = 1, 1
	for _, v := range s[:dim] {
		outer *= v
	}
	for _, v := range s[dim+1:] {
		inner *= v
	}
	return outer, s[dim], inner
}

// Narrow returns indices [from, to) of dimension dim of x.
func (be *Backend) Narrow(x *tensor.Tensor, dim, from, to int) *tensor.Tensor {
	const op = "Narrow"
	xd := data(op, x)
	outer, n, inner := split(op, x.Shape(), dim)
	if from < 0 || to > n || from > to {
		backend.Fail(op, "range [%d, %d) out of dimension %d of %s", from, to, dim, x.Shape())
	}
	s := x.Shape().Clone()
	s[dim] = to - from
	out, od := be.newTensor(s)
	w := (to - from) * inner
	for o := 0; o < outer; o++ {
		copy(od[o*w:(o+1)*w], xd[(o*n+from)*inner:(o*n+to)*inner])
	}
	return out
}

// Concat joins a and b along dimension dim.
func (be *Backend) Concat(a, b *tensor.Tensor, dim int) *tensor.Tensor {
	const op = "Concat"
	ad, bd := data(op, a), data(op, b)
	as, bs := a.Shape(), b.Shape()
	outerA, na, innerA := split(op, as, dim)
	outerB, nb, innerB := split(op, bs, dim)
	if len(as) != len(bs) || outerA != outerB || innerA != innerB {
		backend.Fail(op, "%s and %s differ outside dimension %d", as, bs, dim)
	}
	for i := range as {
		if i != dim && as[i] != bs[i] {
			backend.Fail(op, "%s and %s differ outside dimension %d", as, bs, dim)
		}
	}
	s := as.Clone()
	s[dim] = na + nb
	out, od := be.newTensor(s)
	wa, wb := na*innerA, nb*innerA
	for o := 0; o < outerA; o++ {
		copy(od[o*(wa+wb):], ad[o*wa:(o+1)*wa])
		copy(od[o*(wa+wb)+wa:], bd[o*wb:(o+1)*wb])
	}
	return out
}
