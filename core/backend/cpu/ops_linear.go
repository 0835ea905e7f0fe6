package cpu

import (
	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// Linear computes x·wᵀ + b over the last dimension of x.
func (be *Backend) Linear(x, w, bias *tensor.Tensor) *tensor.Tensor {
	const op = "Linear"
	xd, wd := data(op, x), data(op, w)
	if len(x.Shape()) < 1 {
		backend.Fail(op, "x %s has no feature dimension", x.Shape())
	}
	if len(w.Shape()) != 2 {
		backend.Fail(op, "weight %s is not 2-D (x %s)", w.Shape(), x.Shape())
	}
	k := x.Dim(-1)
	n := w.Dim(0)
	if w.Dim(1) != k {
		backend.Fail(op, "x %s and weight %s: inner sizes %d and %d differ", x.Shape(), w.Shape(), k, w.Dim(1))
	}
	var bd []float32
	if bias != nil {
		bd = data(op, bias)
		if !bias.Shape().Equal(tensor.Shape{n}) {
			backend.Fail(op, "bias %s, want (%d) for weight %s", bias.Shape(), n, w.Shape())
		}
	}
	m := x.Shape()[:len(x.Shape())-1].Numel()
	shape := x.Shape().Clone()
	shape[len(shape)-1] = n
	out, od := be.newTensor(shape)
	fillRows(od, m, n, bd)
	be.gemm(m, n, k, xd, k, wd, k, true, od, n)
	return out
}

// fillRows sets each of m rows of length n to bias (or zero when nil).
func fillRows(dst []float32, m, n int, bias []float32) {
	for i := 0; i < m; i++ {
		row := dst[i*n : i*n+n]
		if bias == nil {
			clear(row)
		} else {
			copy(row, bias)
		}
	}
}

// Conv2D convolves x (B, Cin, H, W) with w (Cout, Cin, kh, kw), adding b.
func (be *Backend) Conv2D(x, w, bias *tensor.Tensor, p backend.Conv2DParams) *tensor.Tensor {
	const op = "Conv2D"
	xd, wd := data(op, x), data(op, w)
	if len(x.Shape()) != 4 || len(w.Shape()) != 4 {
		backend.Fail(op, "x %s and weight %s must both be 4-D", x.Shape(), w.Shape())
	}
	bn, cin, h, wid := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	cout, kh, kw := w.Dim(0), w.Dim(2), w.Dim(3)
	if w.Dim(1) != cin {
		backend.Fail(op, "x %s has %d channels, weight %s expects %d", x.Shape(), cin, w.Shape(), w.Dim(1))
	}
	if p.Stride < 1 {
		backend.Fail(op, "stride %d < 1 (x %s, weight %s)", p.Stride, x.Shape(), w.Shape())
	}
	if p.PadTop < 0 || p.PadBottom < 0 || p.PadLeft < 0 || p.PadRight < 0 {
		backend.Fail(op, "negative padding %+v", p)
	}
	var bd []float32
	if bias != nil {
		bd = data(op, bias)
		if !bias.Shape().Equal(tensor.Shape{cout}) {
			backend.Fail(op, "bias %s, want (%d) for weight %s", bias.Shape(), cout, w.Shape())
		}
	}
	ph, pw := h+p.PadTop+p.PadBottom, wid+p.PadLeft+p.PadRight
	if ph < kh || pw < kw {
		backend.Fail(op, "kernel %dx%d larger than padded input %dx%d (x %s)", kh, kw, ph, pw, x.Shape())
	}
	oh, ow := (ph-kh)/p.Stride+1, (pw-kw)/p.Stride+1
	out, od := be.newTensor(tensor.Shape{bn, cout, oh, ow})
	be.conv2d(xd, wd, bd, od, convGeom{bn, cin, h, wid, cout, kh, kw, oh, ow, p})
	return out
}

// convGeom holds a convolution's sizes.
type convGeom struct {
	b, cin, h, w, cout, kh, kw, oh, ow int
	p                                  backend.Conv2DParams
}

// conv2d runs the convolution as one GEMM per image: out[b] (Cout × P) =
// W (Cout × Cin·kh·kw) · cols (Cin·kh·kw × P), where the patch matrix cols
// is never stored: the GEMM packs its blocks straight from the image
// (convB). 1×1 stride-1 unpadded convolutions use the image as B directly.
func (be *Backend) conv2d(xd, wd, bd, od []float32, g convGeom) {
	P := g.oh * g.ow
	CK := g.cin * g.kh * g.kw
	p := g.p
	pointwise := g.kh == 1 && g.kw == 1 && p.Stride == 1 && p.PadTop == 0 && p.PadBottom == 0 && p.PadLeft == 0 && p.PadRight == 0
	for bi := 0; bi < g.b; bi++ {
		ob := od[bi*g.cout*P : (bi+1)*g.cout*P]
		be.parallelFor(g.cout, max(1, elementGrain/max(P, 1)), func(lo, hi int) {
			for co := lo; co < hi; co++ {
				row := ob[co*P : co*P+P]
				v := float32(0)
				if bd != nil {
					v = bd[co]
				}
				for i := range row {
					row[i] = v
				}
			}
		})
		xb := xd[bi*g.cin*g.h*g.w : (bi+1)*g.cin*g.h*g.w]
		var src bSource = convB{x: xb, g: g}
		if pointwise {
			src = matB{data: xb, ld: P, n: P}
		}
		be.runGemm(&gemmProblem{m: g.cout, n: P, k: CK, a: wd, lda: CK, b: src, c: ob, ldc: P})
	}
}

// convB is the patch matrix of one image as the B operand of a GEMM:
// row (c, ky, kx), column (oy, ox) holds x[c, oy·s+ky-padTop, ox·s+kx-padLeft]
// or zero outside the image.
type convB struct {
	x []float32
	g convGeom
}

func (cb convB) pack(dst []float32, p0, kc, j0, nc, nr int) {
	g := cb.g
	n := g.oh * g.ow
	s := g.p.Stride
	khw := g.kh * g.kw
	for st := 0; st*nr < nc; st++ {
		js := j0 + st*nr
		w := min(nr, n-js)
		strip := dst[st*kc*nr : (st+1)*kc*nr]
		for p := 0; p < kc; p++ {
			r := p0 + p
			c, rem := r/khw, r%khw
			ky, kx := rem/g.kw, rem%g.kw
			d := strip[p*nr : p*nr+nr]
			xc := cb.x[c*g.h*g.w : (c+1)*g.h*g.w]
			for j := 0; j < w; {
				pix := js + j
				oy, ox := pix/g.ow, pix%g.ow
				seg := min(w-j, g.ow-ox)
				iy := oy*s + ky - g.p.PadTop
				ds := d[j : j+seg]
				if iy < 0 || iy >= g.h {
					clear(ds)
				} else {
					row := xc[iy*g.w : (iy+1)*g.w]
					ix := ox*s + kx - g.p.PadLeft
					if s == 1 && ix >= 0 && ix+seg <= g.w {
						copy(ds, row[ix:ix+seg])
					} else {
						for q := range ds {
							if xi := ix + q*s; xi >= 0 && xi < g.w {
								ds[q] = row[xi]
							} else {
								ds[q] = 0
							}
						}
					}
				}
				j += seg
			}
			clear(d[w:])
		}
	}
}
