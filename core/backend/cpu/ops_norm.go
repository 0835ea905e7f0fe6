package cpu

import (
	"math"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// affine checks an optional per-feature weight or bias of length n.
func affine(op, what string, t *tensor.Tensor, n int, x *tensor.Tensor) []float32 {
	if t == nil {
		return nil
	}
	d := data(op, t)
	if !t.Shape().Equal(tensor.Shape{n}) {
		backend.Fail(op, "%s %s, want (%d) for x %s", what, t.Shape(), n, x.Shape())
	}
	return d
}

// LayerNorm normalises over the last dimension, then applies w and b
// (either may be nil).
func (be *Backend) LayerNorm(x, w, b *tensor.Tensor, eps float32) *tensor.Tensor {
	const op = "LayerNorm"
	xd := data(op, x)
	if len(x.Shape()) < 1 {
		backend.Fail(op, "x %s has no feature dimension", x.Shape())
	}
	d := x.Dim(-1)
	wd := affine(op, "weight", w, d, x)
	bd := affine(op, "bias", b, d, x)
	out, od := be.newTensor(x.Shape())
	if d == 0 {
		return out
	}
	rows := x.Numel() / d
	be.parallelFor(rows, max(1, 4096/d), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			src, dst := xd[r*d:r*d+d], od[r*d:r*d+d]
			mean, inv := stats(src, eps)
			m, s := float32(mean), float32(inv)
			for i, v := range src {
				dst[i] = (v - m) * s
			}
			applyAffine(dst, wd, bd)
		}
	})
	return out
}

// stats returns the mean and 1/sqrt(var + eps) of src, accumulated in
// float64 over two passes, each with four independent sums so that the
// additions overlap.
func stats(src []float32, eps float32) (mean, inv float64) {
	n := len(src)
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= n; i += 4 {
		v := src[i : i+4 : i+4]
		s0 += float64(v[0])
		s1 += float64(v[1])
		s2 += float64(v[2])
		s3 += float64(v[3])
	}
	for ; i < n; i++ {
		s0 += float64(src[i])
	}
	mean = (s0 + s1 + s2 + s3) / float64(n)
	var q0, q1, q2, q3 float64
	i = 0
	for ; i+4 <= n; i += 4 {
		v := src[i : i+4 : i+4]
		d0, d1, d2, d3 := float64(v[0])-mean, float64(v[1])-mean, float64(v[2])-mean, float64(v[3])-mean
		q0 += d0 * d0
		q1 += d1 * d1
		q2 += d2 * d2
		q3 += d3 * d3
	}
	for ; i < n; i++ {
		d := float64(src[i]) - mean
		q0 += d * d
	}
	return mean, 1 / math.Sqrt((q0+q1+q2+q3)/float64(n)+float64(eps))
}

func applyAffine(dst, w, b []float32) {
	switch {
	case w != nil && b != nil:
		for i := range dst {
			dst[i] = dst[i]*w[i] + b[i]
		}
	case w != nil:
		for i := range dst {
			dst[i] *= w[i]
		}
	case b != nil:
		for i := range dst {
			dst[i] += b[i]
		}
	}
}

// GroupNorm normalises x (B, C, ...) over groups of channels and the
// spatial positions, applies per-channel w and b (either may be nil), and
// then SiLU when silu is set.
func (be *Backend) GroupNorm(x, w, b *tensor.Tensor, groups int, eps float32, silu bool) *tensor.Tensor {
	const op = "GroupNorm"
	xd := data(op, x)
	if len(x.Shape()) < 2 {
		backend.Fail(op, "x %s must be at least (B, C)", x.Shape())
	}
	bn, c := x.Dim(0), x.Dim(1)
	if groups < 1 || c%groups != 0 {
		backend.Fail(op, "%d channels of x %s do not divide into %d groups", c, x.Shape(), groups)
	}
	wd := affine(op, "weight", w, c, x)
	bd := affine(op, "bias", b, c, x)
	out, od := be.newTensor(x.Shape())
	spatial := x.Shape()[2:].Numel()
	cpg := c / groups
	gsize := cpg * spatial
	if gsize == 0 {
		return out
	}
	be.parallelFor(bn*groups, max(1, 16384/gsize), func(lo, hi int) {
		for bg := lo; bg < hi; bg++ {
			g := bg % groups
			base := bg * gsize
			mean, inv := stats(xd[base:base+gsize], eps)
			m := float32(mean)
			for ci := 0; ci < cpg; ci++ {
				ch := g*cpg + ci
				scale, shift := float32(inv), float32(0)
				if wd != nil {
					scale = float32(inv * float64(wd[ch]))
				}
				if bd != nil {
					shift = bd[ch]
				}
				src := xd[base+ci*spatial : base+(ci+1)*spatial]
				dst := od[base+ci*spatial : base+(ci+1)*spatial]
				for i, v := range src {
					dst[i] = (v-m)*scale + shift
				}
				if silu {
					sigmul(dst, dst, 1, be.vec)
				}
			}
		}
	})
	return out
}
