package cpu

import (
	"math"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// elementGrain is the number of elements one worker handles at least.
const elementGrain = 1 << 15

// unary applies f to every element of x into a new tensor.
func (be *Backend) unary(op string, x *tensor.Tensor, f func(dst, src []float32)) *tensor.Tensor {
	xd := data(op, x)
	out, od := be.newTensor(x.Shape())
	be.parallelFor(len(xd), elementGrain, func(lo, hi int) { f(od[lo:hi], xd[lo:hi]) })
	return out
}

// Add returns a + b for tensors of equal shape.
func (be *Backend) Add(a, b *tensor.Tensor) *tensor.Tensor {
	const op = "Add"
	ad, bd := data(op, a), data(op, b)
	if !a.Shape().Equal(b.Shape()) {
		backend.Fail(op, "shapes %s and %s differ", a.Shape(), b.Shape())
	}
	out, od := be.newTensor(a.Shape())
	be.parallelFor(len(ad), elementGrain, func(lo, hi int) {
		dst, x, y := od[lo:hi], ad[lo:hi], bd[lo:hi]
		for i := range dst {
			dst[i] = x[i] + y[i]
		}
	})
	return out
}

// AddBroadcast returns x + v where v's shape is a prefix of x's (v repeated
// over x's trailing dimensions) or a suffix of it (v repeated over x's
// leading dimensions). Equal shapes add elementwise and a scalar v of
// shape () is added everywhere; a v that fits both ways otherwise is
// ambiguous and fails.
func (be *Backend) AddBroadcast(x, v *tensor.Tensor) *tensor.Tensor {
	const op = "AddBroadcast"
	xd, vd := data(op, x), data(op, v)
	xs, vs := x.Shape(), v.Shape()
	if xs.Equal(vs) {
		return be.Add(x, v)
	}
	prefix := len(vs) <= len(xs) && xs[:len(vs)].Equal(vs)
	suffix := len(vs) <= len(xs) && xs[len(xs)-len(vs):].Equal(vs)
	if len(vs) == 0 { // a scalar: both placements agree
		suffix = false
	}
	switch {
	case prefix && suffix:
		backend.Fail(op, "v %s fits x %s both as prefix and as suffix", vs, xs)
	case !prefix && !suffix:
		backend.Fail(op, "v %s is neither a prefix nor a suffix of x %s", vs, xs)
	}
	out, od := be.newTensor(xs)
	nv := len(vd)
	if nv == 0 {
		return out
	}
	if prefix {
		inner := len(xd) / nv
		be.parallelFor(nv, max(1, elementGrain/max(inner, 1)), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				s := vd[i]
				src, dst := xd[i*inner:(i+1)*inner], od[i*inner:(i+1)*inner]
				for j, a := range src {
					dst[j] = a + s
				}
			}
		})
		return out
	}
	outer := len(xd) / nv
	be.parallelFor(outer, max(1, elementGrain/nv), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			src, dst := xd[i*nv:(i+1)*nv], od[i*nv:(i+1)*nv]
			for j, a := range src {
				dst[j] = a + vd[j]
			}
		}
	})
	return out
}

// Scale returns s·x.
func (be *Backend) Scale(x *tensor.Tensor, s float32) *tensor.Tensor {
	return be.unary("Scale", x, func(dst, src []float32) {
		for i, v := range src {
			dst[i] = v * s
		}
	})
}

// geluf returns the erf GELU v·Φ(v) = v/2·(1 + erf(v/√2)).
func geluf(v float32) float32 { return 0.5 * v * (1 + erff(v*(1/math.Sqrt2))) }

// SiLU returns x·sigmoid(x).
func (be *Backend) SiLU(x *tensor.Tensor) *tensor.Tensor {
	return be.unary("SiLU", x, func(dst, src []float32) { sigmul(dst, src, 1, be.vec) })
}

// GELU returns the exact (erf) GELU of x.
func (be *Backend) GELU(x *tensor.Tensor) *tensor.Tensor {
	return be.unary("GELU", x, func(dst, src []float32) { geluMul(dst, src, nil, be.vec) })
}

// QuickGELU returns x·sigmoid(1.702·x).
func (be *Backend) QuickGELU(x *tensor.Tensor) *tensor.Tensor {
	return be.unary("QuickGELU", x, func(dst, src []float32) { sigmul(dst, src, 1.702, be.vec) })
}

// GEGLU splits the last dimension into halves a and g and returns a·GELU(g).
func (be *Backend) GEGLU(x *tensor.Tensor) *tensor.Tensor {
	const op = "GEGLU"
	xd := data(op, x)
	if len(x.Shape()) < 1 || x.Dim(-1)%2 != 0 {
		backend.Fail(op, "last dimension of x %s is not even", x.Shape())
	}
	d2 := x.Dim(-1)
	d := d2 / 2
	shape := x.Shape().Clone()
	shape[len(shape)-1] = d
	out, od := be.newTensor(shape)
	if d == 0 {
		return out
	}
	rows := len(xd) / d2
	be.parallelFor(rows, max(1, elementGrain/d2), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			geluMul(od[r*d:r*d+d], xd[r*d2+d:r*d2+d2], xd[r*d2:r*d2+d], be.vec)
		}
	})
	return out
}
