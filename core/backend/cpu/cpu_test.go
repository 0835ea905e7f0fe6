package cpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// newTest returns a backend whose fresh buffers are NaN-filled, with an odd
// thread count so that work splits unevenly.
func newTest(t *testing.T) *Backend {
	t.Helper()
	be := New(WithThreads(3))
	be.pool.poison = true
	return be
}

func randn(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

// relErr is max|got-want| / max|want|.
func relErr(got []float32, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var md, mw float64
	for i := range got {
		g := float64(got[i])
		if math.IsNaN(g) {
			return math.Inf(1)
		}
		md = max(md, math.Abs(g-want[i]))
		mw = max(mw, math.Abs(want[i]))
	}
	if mw == 0 {
		return md
	}
	return md / mw
}

func check(t *testing.T, name string, got *tensor.Tensor, wantShape tensor.Shape, want []float64, be *Backend, tol float64) {
	t.Helper()
	if !got.Shape().Equal(wantShape) {
		t.Fatalf("%s: shape %s, want %s", name, got.Shape(), wantShape)
	}
	if e := relErr(be.ToFloat32(got), want); e > tol {
		t.Fatalf("%s: relative error %.3g > %.3g", name, e, tol)
	}
}

// mustFail runs f and checks it panics with a *backend.Error naming op and
// containing every fragment.
func mustFail(t *testing.T, op string, f func(), fragments ...string) {
	t.Helper()
	var err error
	func() {
		defer backend.Recover(&err)
		f()
	}()
	var be *backend.Error
	if !errors.As(err, &be) {
		t.Fatalf("%s: no backend error (err %v)", op, err)
	}
	if be.Op != op {
		t.Fatalf("error op %q, want %q (%v)", be.Op, op, err)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Fatalf("%s: error %q lacks %q", op, err, f)
		}
	}
}

func TestUploadF32ZeroCopyAndAlignment(t *testing.T) {
	be := newTest(t)
	vals := []float32{1, -2.5, 3e-8, float32(math.Inf(1))}
	raw := make([]byte, 4*len(vals)+1)
	for i, v := range vals {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	aligned := raw[:16]
	if uintptr(unsafe.Pointer(&aligned[0]))%4 != 0 {
		t.Skip("allocator returned unaligned bytes")
	}
	w := be.Upload(tensor.Shape{2, 2}, tensor.F32, aligned)
	d := data("test", w)
	if &d[0] != (*float32)(unsafe.Pointer(&aligned[0])) {
		t.Fatal("aligned F32 upload copied the data")
	}
	for i, v := range vals {
		if d[i] != v {
			t.Fatalf("element %d = %v, want %v", i, d[i], v)
		}
	}
	// Unaligned: shift by one byte; the upload must copy and still decode.
	un := make([]byte, 17)
	copy(un[1:], aligned)
	u := be.Upload(tensor.Shape{4}, tensor.F32, un[1:])
	ud := data("test", u)
	if unsafe.Pointer(&ud[0]) == unsafe.Pointer(&un[1]) {
		t.Fatal("unaligned upload aliased the bytes")
	}
	for i, v := range vals {
		if ud[i] != v {
			t.Fatalf("unaligned element %d = %v, want %v", i, ud[i], v)
		}
	}
	// Freeing a weight must not hand its bytes to the pool.
	be.Free(w, u)
	if be.pool.size() != 0 {
		t.Fatal("weights went into the activation pool")
	}
	mustFail(t, "Upload", func() { be.Upload(tensor.Shape{3}, tensor.F32, raw[:8]) }, "(3)", "12 bytes", "got 8")
	mustFail(t, "Upload", func() { be.Upload(tensor.Shape{1}, tensor.DType(99), raw[:4]) }, "unsupported dtype")
}

func TestUploadF16BF16(t *testing.T) {
	be := newTest(t)
	f16 := []struct {
		bits uint16
		want float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 1.0 / (1 << 24)},
		{0x0400, 1.0 / (1 << 14)}, {0x8000, float32(math.Copysign(0, -1))}, {0x3555, 0.333251953125},
		{0x7c00, float32(math.Inf(1))}, {0xfc00, float32(math.Inf(-1))}, {0x83ff, -float32(1023) / (1 << 24)},
	}
	raw := make([]byte, 2*len(f16))
	for i, c := range f16 {
		binary.LittleEndian.PutUint16(raw[2*i:], c.bits)
	}
	got := be.ToFloat32(be.Upload(tensor.Shape{len(f16)}, tensor.F16, raw))
	for i, c := range f16 {
		if got[i] != c.want || math.Signbit(float64(got[i])) != math.Signbit(float64(c.want)) {
			t.Errorf("f16 %#04x → %v, want %v", c.bits, got[i], c.want)
		}
	}
	nan := be.ToFloat32(be.Upload(tensor.Shape{1}, tensor.F16, []byte{0x01, 0x7e}))
	if !math.IsNaN(float64(nan[0])) {
		t.Errorf("f16 NaN → %v", nan[0])
	}
	bf := []float32{1, -3.5, 1e30, -1e-30}
	rawb := make([]byte, 2*len(bf))
	for i, v := range bf {
		binary.LittleEndian.PutUint16(rawb[2*i:], uint16(math.Float32bits(v)>>16))
	}
	gotb := be.ToFloat32(be.Upload(tensor.Shape{2, 2}, tensor.BF16, rawb))
	for i, v := range bf {
		want := math.Float32frombits(math.Float32bits(v) &^ 0xffff)
		if gotb[i] != want {
			t.Errorf("bf16 %v → %v, want %v", v, gotb[i], want)
		}
	}
	mustFail(t, "Upload", func() { be.Upload(tensor.Shape{3}, tensor.BF16, rawb) }, "6 bytes", "got 8")
}

func TestFromToFloat32FreePoolReshape(t *testing.T) {
	be := newTest(t)
	src := []float32{1, 2, 3, 4, 5, 6}
	x := be.FromFloat32(tensor.Shape{2, 3}, src)
	src[0] = 99
	got := be.ToFloat32(x)
	if got[0] != 1 {
		t.Fatal("FromFloat32 aliased its input")
	}
	got[1] = 77
	if be.ToFloat32(x)[1] != 2 {
		t.Fatal("ToFloat32 returned a view")
	}
	r := be.Reshape(x, tensor.Shape{3, 2})
	if !r.Shape().Equal(tensor.Shape{3, 2}) || be.ToFloat32(r)[5] != 6 {
		t.Fatalf("Reshape: %s %v", r.Shape(), be.ToFloat32(r))
	}
	be.Free(x)
	if be.pool.size() != 0 {
		t.Fatal("buffer pooled while a reshaped view is alive")
	}
	if be.ToFloat32(r)[2] != 3 {
		t.Fatal("view lost its data after freeing the original")
	}
	mustFail(t, "ToFloat32", func() { be.ToFloat32(x) }, "freed")
	be.Free(r, r, nil) // double free and nil are no-ops
	if be.pool.size() != 6 {
		t.Fatalf("pool holds %d floats, want 6", be.pool.size())
	}
	mustFail(t, "ToFloat32", func() { be.ToFloat32(r) }, "freed")
	y := be.FromFloat32(tensor.Shape{6}, []float32{6, 5, 4, 3, 2, 1})
	if be.pool.size() != 0 {
		t.Fatal("pooled buffer not reused")
	}
	if g := be.ToFloat32(y); g[0] != 6 || g[5] != 1 {
		t.Fatalf("reused buffer holds %v", g)
	}
	mustFail(t, "Reshape", func() { be.Reshape(y, tensor.Shape{4, 2}) }, "(6)", "(4, 2)")
	mustFail(t, "FromFloat32", func() { be.FromFloat32(tensor.Shape{2}, src) }, "(2)", "6")
	mustFail(t, "Add", func() { be.Add(tensor.New(tensor.Shape{1}, tensor.F32, []float32{1}), y) }, "cpu backend")
	small := New(WithPoolLimit(40)) // room for 10 floats: one buffer of 8
	a := small.FromFloat32(tensor.Shape{8}, make([]float32, 8))
	b := small.FromFloat32(tensor.Shape{8}, make([]float32, 8))
	small.Free(a, b)
	if small.pool.size() != 8 {
		t.Fatalf("pool with a limit of 10 floats holds %d, want 8", small.pool.size())
	}
}

func TestLinear(t *testing.T) {
	be := newTest(t)
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		lead    tensor.Shape
		k, n    int
		hasBias bool
	}{
		{tensor.Shape{1}, 1, 1, true}, {tensor.Shape{3, 5}, 7, 9, true}, {tensor.Shape{2, 33}, 65, 129, false},
		{tensor.Shape{77}, 64, 48, true}, {tensor.Shape{1, 1, 4}, 3, 2, false},
	} {
		m := c.lead.Numel()
		xs := randn(r, m*c.k)
		ws := randn(r, c.n*c.k)
		bs := randn(r, c.n)
		x := be.FromFloat32(append(c.lead.Clone(), c.k), xs)
		w := be.FromFloat32(tensor.Shape{c.n, c.k}, ws)
		var b *tensor.Tensor
		if c.hasBias {
			b = be.FromFloat32(tensor.Shape{c.n}, bs)
		}
		want := make([]float64, m*c.n)
		for i := 0; i < m; i++ {
			for j := 0; j < c.n; j++ {
				var s float64
				if c.hasBias {
					s = float64(bs[j])
				}
				for p := 0; p < c.k; p++ {
					s += float64(xs[i*c.k+p]) * float64(ws[j*c.k+p])
				}
				want[i*c.n+j] = s
			}
		}
		check(t, "Linear", be.Linear(x, w, b), append(c.lead.Clone(), c.n), want, be, 1e-5)
	}
	x := be.FromFloat32(tensor.Shape{2, 3}, make([]float32, 6))
	mustFail(t, "Linear", func() { be.Linear(x, be.FromFloat32(tensor.Shape{4, 5}, make([]float32, 20)), nil) }, "(2, 3)", "(4, 5)")
	mustFail(t, "Linear", func() {
		be.Linear(x, be.FromFloat32(tensor.Shape{4, 3}, make([]float32, 12)), be.FromFloat32(tensor.Shape{3}, make([]float32, 3)))
	}, "bias (3)")
}

// refConv is the direct definition of a 2-D convolution.
func refConv(xs, ws, bs []float32, bn, cin, h, w, cout, kh, kw int, p backend.Conv2DParams) ([]float64, tensor.Shape) {
	oh := (h+p.PadTop+p.PadBottom-kh)/p.Stride + 1
	ow := (w+p.PadLeft+p.PadRight-kw)/p.Stride + 1
	out := make([]float64, bn*cout*oh*ow)
	for b := 0; b < bn; b++ {
		for co := 0; co < cout; co++ {
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					var s float64
					if bs != nil {
						s = float64(bs[co])
					}
					for ci := 0; ci < cin; ci++ {
						for ky := 0; ky < kh; ky++ {
							for kx := 0; kx < kw; kx++ {
								iy, ix := oy*p.Stride+ky-p.PadTop, ox*p.Stride+kx-p.PadLeft
								if iy < 0 || iy >= h || ix < 0 || ix >= w {
									continue
								}
								s += float64(xs[((b*cin+ci)*h+iy)*w+ix]) * float64(ws[((co*cin+ci)*kh+ky)*kw+kx])
							}
						}
					}
					out[((b*cout+co)*oh+oy)*ow+ox] = s
				}
			}
		}
	}
	return out, tensor.Shape{bn, cout, oh, ow}
}

func TestConv2D(t *testing.T) {
	be := newTest(t)
	r := rand.New(rand.NewPCG(3, 4))
	for _, c := range []struct {
		bn, cin, h, w, cout, kh, kw int
		p                           backend.Conv2DParams
		bias                        bool
	}{
		{1, 3, 8, 8, 4, 3, 3, backend.SymmetricPad(1, 1), true},
		{2, 5, 7, 9, 6, 3, 3, backend.SymmetricPad(1, 1), true},
		{2, 4, 9, 7, 3, 3, 3, backend.SymmetricPad(2, 1), false},
		{1, 4, 8, 8, 5, 3, 3, backend.Conv2DParams{Stride: 2, PadBottom: 1, PadRight: 1}, true},
		{2, 3, 7, 7, 2, 3, 3, backend.Conv2DParams{Stride: 2, PadBottom: 1, PadRight: 1}, true},
		{2, 6, 5, 3, 7, 1, 1, backend.SymmetricPad(1, 0), true},
		{1, 6, 5, 3, 7, 1, 1, backend.SymmetricPad(1, 0), false},
		{1, 2, 6, 6, 3, 1, 1, backend.SymmetricPad(2, 1), true},
		{1, 3, 4, 11, 2, 1, 3, backend.Conv2DParams{Stride: 1, PadLeft: 2, PadRight: 0}, true},
		{1, 2, 3, 3, 2, 3, 3, backend.SymmetricPad(1, 0), true},
		{1, 33, 17, 19, 65, 3, 3, backend.SymmetricPad(1, 1), true},
	} {
		xs := randn(r, c.bn*c.cin*c.h*c.w)
		ws := randn(r, c.cout*c.cin*c.kh*c.kw)
		var bs []float32
		var b *tensor.Tensor
		if c.bias {
			bs = randn(r, c.cout)
			b = be.FromFloat32(tensor.Shape{c.cout}, bs)
		}
		want, shape := refConv(xs, ws, bs, c.bn, c.cin, c.h, c.w, c.cout, c.kh, c.kw, c.p)
		x := be.FromFloat32(tensor.Shape{c.bn, c.cin, c.h, c.w}, xs)
		w := be.FromFloat32(tensor.Shape{c.cout, c.cin, c.kh, c.kw}, ws)
		// Every micro-kernel packs the patches in strips of its own width.
		for _, kern := range availableKernels() {
			be.kernel = kern
			check(t, "Conv2D "+kern.name, be.Conv2D(x, w, b, c.p), shape, want, be, 1e-5)
		}
		be.kernel = bestKernel()
	}
	x := be.FromFloat32(tensor.Shape{1, 3, 4, 4}, make([]float32, 48))
	mustFail(t, "Conv2D", func() {
		be.Conv2D(x, be.FromFloat32(tensor.Shape{2, 4, 3, 3}, make([]float32, 72)), nil, backend.SymmetricPad(1, 1))
	}, "(1, 3, 4, 4)", "(2, 4, 3, 3)")
	mustFail(t, "Conv2D", func() {
		be.Conv2D(x, be.FromFloat32(tensor.Shape{2, 3, 5, 5}, make([]float32, 150)), nil, backend.SymmetricPad(1, 0))
	}, "larger")
	mustFail(t, "Conv2D", func() {
		be.Conv2D(x, be.FromFloat32(tensor.Shape{2, 3, 1, 1}, make([]float32, 6)), nil, backend.SymmetricPad(0, 0))
	}, "stride 0")
}

func TestLayerNorm(t *testing.T) {
	be := newTest(t)
	r := rand.New(rand.NewPCG(5, 6))
	for _, shape := range []tensor.Shape{{1, 1}, {2, 3, 7}, {77, 768}, {5, 33}} {
		d := shape[len(shape)-1]
		xs := randn(r, shape.Numel())
		for i := range xs {
			xs[i] = xs[i]*3 + 10 // offset mean to stress the variance
		}
		ws, bs := randn(r, d), randn(r, d)
		want := make([]float64, len(xs))
		for row := 0; row < len(xs)/d; row++ {
			var mean, v float64
			for i := 0; i < d; i++ {
				mean += float64(xs[row*d+i])
			}
			mean /= float64(d)
			for i := 0; i < d; i++ {
				v += (float64(xs[row*d+i]) - mean) * (float64(xs[row*d+i]) - mean)
			}
			v /= float64(d)
			for i := 0; i < d; i++ {
				want[row*d+i] = (float64(xs[row*d+i])-mean)/math.Sqrt(v+1e-5)*float64(ws[i]) + float64(bs[i])
			}
		}
		x := be.FromFloat32(shape, xs)
		check(t, "LayerNorm", be.LayerNorm(x, be.FromFloat32(tensor.Shape{d}, ws), be.FromFloat32(tensor.Shape{d}, bs), 1e-5), shape, want, be, 1e-5)
	}
	x := be.FromFloat32(tensor.Shape{2, 4}, make([]float32, 8))
	mustFail(t, "LayerNorm", func() { be.LayerNorm(x, be.FromFloat32(tensor.Shape{3}, make([]float32, 3)), nil, 1e-5) }, "weight (3)", "(2, 4)")
}

func TestGroupNorm(t *testing.T) {
	for _, vec := range []bool{false, hasVec()} {
		testGroupNorm(t, vec)
	}
}

func testGroupNorm(t *testing.T, vec bool) {
	be := newTest(t)
	be.vec = vec
	r := rand.New(rand.NewPCG(7, 8))
	for _, c := range []struct {
		shape  tensor.Shape
		groups int
		silu   bool
	}{
		{tensor.Shape{1, 4, 3, 3}, 2, false}, {tensor.Shape{2, 6, 5, 7}, 3, true}, {tensor.Shape{2, 32, 4, 4}, 32, true},
		{tensor.Shape{1, 64, 9, 9}, 32, false}, {tensor.Shape{1, 5, 1, 1}, 1, true}, {tensor.Shape{3, 8, 11}, 4, false},
		{tensor.Shape{1, 64, 8, 9}, 32, true}, {tensor.Shape{2, 12, 5, 5}, 4, true},
	} {
		bn, ch := c.shape[0], c.shape[1]
		sp := c.shape[2:].Numel()
		xs := randn(r, c.shape.Numel())
		ws, bs := randn(r, ch), randn(r, ch)
		want := make([]float64, len(xs))
		cpg := ch / c.groups
		for b := 0; b < bn; b++ {
			for g := 0; g < c.groups; g++ {
				base := (b*ch + g*cpg) * sp
				n := cpg * sp
				var mean, v float64
				for i := 0; i < n; i++ {
					mean += float64(xs[base+i])
				}
				mean /= float64(n)
				for i := 0; i < n; i++ {
					v += (float64(xs[base+i]) - mean) * (float64(xs[base+i]) - mean)
				}
				v /= float64(n)
				for i := 0; i < n; i++ {
					chn := g*cpg + i/sp
					y := (float64(xs[base+i])-mean)/math.Sqrt(v+1e-6)*float64(ws[chn]) + float64(bs[chn])
					if c.silu {
						y = y / (1 + math.Exp(-y))
					}
					want[base+i] = y
				}
			}
		}
		x := be.FromFloat32(c.shape, xs)
		check(t, "GroupNorm", be.GroupNorm(x, be.FromFloat32(tensor.Shape{ch}, ws), be.FromFloat32(tensor.Shape{ch}, bs), c.groups, 1e-6, c.silu), c.shape, want, be, 1e-5)
	}
	x := be.FromFloat32(tensor.Shape{1, 6, 2, 2}, make([]float32, 24))
	mustFail(t, "GroupNorm", func() { be.GroupNorm(x, nil, nil, 4, 1e-5, false) }, "6 channels", "4 groups")
}

// refAttention computes attention per head in float64.
func refAttention(qs, ks, vs []float32, bn, lq, lk, f, heads int, scale float64, causal bool) []float64 {
	d := f / heads
	out := make([]float64, bn*lq*f)
	for b := 0; b < bn; b++ {
		for h := 0; h < heads; h++ {
			for i := 0; i < lq; i++ {
				s := make([]float64, lk)
				mx := math.Inf(-1)
				for j := 0; j < lk; j++ {
					if causal && j > i {
						s[j] = math.Inf(-1)
						continue
					}
					var dot float64
					for t := 0; t < d; t++ {
						dot += float64(qs[(b*lq+i)*f+h*d+t]) * float64(ks[(b*lk+j)*f+h*d+t])
					}
					s[j] = dot * scale
					mx = math.Max(mx, s[j])
				}
				var sum float64
				for j := range s {
					s[j] = math.Exp(s[j] - mx)
					sum += s[j]
				}
				for t := 0; t < d; t++ {
					var acc float64
					for j := 0; j < lk; j++ {
						acc += s[j] / sum * float64(vs[(b*lk+j)*f+h*d+t])
					}
					out[(b*lq+i)*f+h*d+t] = acc
				}
			}
		}
	}
	return out
}

func TestAttention(t *testing.T) {
	be := newTest(t)
	r := rand.New(rand.NewPCG(9, 10))
	for _, c := range []struct {
		bn, lq, lk, f, heads int
		causal               bool
	}{
		{1, 1, 1, 4, 1, false}, {2, 7, 7, 12, 3, true}, {1, 77, 77, 64, 8, true}, {2, 33, 13, 40, 5, false},
		{1, 9, 77, 16, 2, false}, {1, 5, 3, 8, 2, true}, {2, 65, 65, 24, 1, false}, {1, 200, 150, 32, 2, true},
	} {
		qs, ks, vs := randn(r, c.bn*c.lq*c.f), randn(r, c.bn*c.lk*c.f), randn(r, c.bn*c.lk*c.f)
		q := be.FromFloat32(tensor.Shape{c.bn, c.lq, c.f}, qs)
		k := be.FromFloat32(tensor.Shape{c.bn, c.lk, c.f}, ks)
		v := be.FromFloat32(tensor.Shape{c.bn, c.lk, c.f}, vs)
		for _, scale := range []float64{1 / math.Sqrt(float64(c.f/c.heads)), -0.3} {
			want := refAttention(qs, ks, vs, c.bn, c.lq, c.lk, c.f, c.heads, scale, c.causal)
			// Scalar and vector softmax, wide and narrow micro-kernels.
			for _, vec := range []bool{false, hasVec()} {
				for _, kern := range []*microKernel{bestKernel(), &goKernels[0]} {
					be.vec, be.kernel = vec, kern
					got := be.Attention(q, k, v, backend.AttentionParams{Heads: c.heads, Scale: float32(scale), Causal: c.causal})
					check(t, fmt.Sprintf("Attention %+v scale %.3g vec %v %s", c, scale, vec, kern.name), got, tensor.Shape{c.bn, c.lq, c.f}, want, be, 1e-5)
				}
			}
		}
	}
	be.vec, be.kernel = hasVec(), bestKernel()
	q := be.FromFloat32(tensor.Shape{1, 2, 6}, make([]float32, 12))
	k := be.FromFloat32(tensor.Shape{1, 3, 6}, make([]float32, 18))
	mustFail(t, "Attention", func() { be.Attention(q, k, k, backend.AttentionParams{Heads: 4, Scale: 1}) }, "4 heads")
	mustFail(t, "Attention", func() { be.Attention(q, k, q, backend.AttentionParams{Heads: 2, Scale: 1}) }, "(1, 3, 6)", "(1, 2, 6)")
}

func TestEmbeddingGatherRows(t *testing.T) {
	be := newTest(t)
	r := rand.New(rand.NewPCG(11, 12))
	ts := randn(r, 10*6)
	table := be.FromFloat32(tensor.Shape{10, 6}, ts)
	ids := []int32{3, 0, 9, 9, 1, 4}
	e := be.Embedding(table, ids, tensor.Shape{2, 3})
	want := make([]float64, 0, 36)
	for _, id := range ids {
		for j := 0; j < 6; j++ {
			want = append(want, float64(ts[int(id)*6+j]))
		}
	}
	check(t, "Embedding", e, tensor.Shape{2, 3, 6}, want, be, 0)
	g := be.GatherRows(e, []int{2, 0})
	wantG := append(append([]float64(nil), want[2*6:3*6]...), want[3*6:4*6]...)
	check(t, "GatherRows", g, tensor.Shape{2, 6}, wantG, be, 0)
	mustFail(t, "Embedding", func() { be.Embedding(table, []int32{10}, tensor.Shape{1, 1}) }, "id 10", "(10, 6)")
	mustFail(t, "Embedding", func() { be.Embedding(table, []int32{1, 2}, tensor.Shape{1, 3}) }, "(1, 3)")
	mustFail(t, "GatherRows", func() { be.GatherRows(e, []int{3, 0}) }, "row 3", "(2, 3, 6)")
	mustFail(t, "GatherRows", func() { be.GatherRows(e, []int{1}) }, "1 rows")
}

func TestElementwise(t *testing.T) {
	for _, vec := range []bool{false, hasVec()} {
		be := newTest(t)
		be.vec = vec
		r := rand.New(rand.NewPCG(13, 14))
		shape := tensor.Shape{3, 5, 67}
		n := shape.Numel()
		as, bs := randn(r, n), randn(r, n)
		for i := 0; i < 12; i++ { // tails of the activations
			as[i] = float32(i-6) * 15
		}
		a, b := be.FromFloat32(shape, as), be.FromFloat32(shape, bs)
		apply := func(f func(x float64) float64) []float64 {
			w := make([]float64, n)
			for i, v := range as {
				w[i] = f(float64(v))
			}
			return w
		}
		sum := make([]float64, n)
		for i := range sum {
			sum[i] = float64(as[i]) + float64(bs[i])
		}
		name := fmt.Sprintf(" (vec %v)", vec)
		check(t, "Add"+name, be.Add(a, b), shape, sum, be, 1e-7)
		check(t, "Scale"+name, be.Scale(a, -1.5), shape, apply(func(x float64) float64 { return -1.5 * x }), be, 1e-7)
		check(t, "SiLU"+name, be.SiLU(a), shape, apply(func(x float64) float64 { return x / (1 + math.Exp(-x)) }), be, 1e-6)
		check(t, "QuickGELU"+name, be.QuickGELU(a), shape, apply(func(x float64) float64 { return x / (1 + math.Exp(-1.702*x)) }), be, 1e-6)
		// GELU against tabulated values of x·Φ(x).
		known := be.FromFloat32(tensor.Shape{5}, []float32{1, -1, 0, 2.5, -4})
		check(t, "GELU"+name, be.GELU(known), tensor.Shape{5}, []float64{0.8413447460685429, -0.15865525393145707, 0, 2.4844758366855595, -0.00012668496733247968}, be, 1e-6)
		check(t, "GELU"+name, be.GELU(a), shape, apply(func(x float64) float64 { return 0.5 * x * math.Erfc(-x/math.Sqrt2) }), be, 1e-6)
		mustFail(t, "Add", func() { be.Add(a, be.Reshape(b, tensor.Shape{15, shape[2]})) }, "(3, 5,", "(15,")
	}
}

func TestGEGLU(t *testing.T) {
	for _, vec := range []bool{false, hasVec()} {
		be := newTest(t)
		be.vec = vec
		r := rand.New(rand.NewPCG(15, 16))
		shape := tensor.Shape{2, 7, 2 * 13}
		xs := randn(r, shape.Numel())
		want := make([]float64, 0, shape.Numel()/2)
		for row := 0; row < 14; row++ {
			for i := 0; i < 13; i++ {
				a, g := float64(xs[row*26+i]), float64(xs[row*26+13+i])
				want = append(want, a*0.5*g*math.Erfc(-g/math.Sqrt2))
			}
		}
		check(t, fmt.Sprintf("GEGLU (vec %v)", vec), be.GEGLU(be.FromFloat32(shape, xs)), tensor.Shape{2, 7, 13}, want, be, 1e-6)
		mustFail(t, "GEGLU", func() { be.GEGLU(be.FromFloat32(tensor.Shape{1, 3}, make([]float32, 3))) }, "(1, 3)")
	}
}

func TestAddBroadcast(t *testing.T) {
	be := newTest(t)
	r := rand.New(rand.NewPCG(17, 18))
	// Prefix: time embedding (B, C) over (B, C, H, W).
	xs, vs := randn(r, 2*3*4*5), randn(r, 2*3)
	want := make([]float64, len(xs))
	for i := range xs {
		want[i] = float64(xs[i]) + float64(vs[i/20])
	}
	x := be.FromFloat32(tensor.Shape{2, 3, 4, 5}, xs)
	check(t, "AddBroadcast prefix", be.AddBroadcast(x, be.FromFloat32(tensor.Shape{2, 3}, vs)), x.Shape(), want, be, 1e-7)
	// Suffix: position embedding (L, D) over (B, L, D).
	ys, ps := randn(r, 3*7*4), randn(r, 7*4)
	wantY := make([]float64, len(ys))
	for i := range ys {
		wantY[i] = float64(ys[i]) + float64(ps[i%28])
	}
	y := be.FromFloat32(tensor.Shape{3, 7, 4}, ys)
	check(t, "AddBroadcast suffix", be.AddBroadcast(y, be.FromFloat32(tensor.Shape{7, 4}, ps)), y.Shape(), wantY, be, 1e-7)
	// Bias over the last dimension is a suffix too.
	wantB := make([]float64, len(ys))
	for i := range ys {
		wantB[i] = float64(ys[i]) + float64(ps[i%4])
	}
	check(t, "AddBroadcast bias", be.AddBroadcast(y, be.FromFloat32(tensor.Shape{4}, ps[:4])), y.Shape(), wantB, be, 1e-7)
	wantS := make([]float64, len(ys))
	for i := range ys {
		wantS[i] = float64(ys[i]) + 2.5
	}
	check(t, "AddBroadcast scalar", be.AddBroadcast(y, be.FromFloat32(tensor.Shape{}, []float32{2.5})), y.Shape(), wantS, be, 1e-7)
	sq := be.FromFloat32(tensor.Shape{4, 4}, make([]float32, 16))
	mustFail(t, "AddBroadcast", func() { be.AddBroadcast(sq, be.FromFloat32(tensor.Shape{4}, ps[:4])) }, "both")
	mustFail(t, "AddBroadcast", func() { be.AddBroadcast(y, be.FromFloat32(tensor.Shape{5}, ps[:5])) }, "(5)", "(3, 7, 4)")
}

func TestLayoutOps(t *testing.T) {
	be := newTest(t)
	r := rand.New(rand.NewPCG(19, 20))
	bn, c1, c2, h, w := 2, 3, 5, 7, 9
	as, bs := randn(r, bn*c1*h*w), randn(r, bn*c2*h*w)
	a := be.FromFloat32(tensor.Shape{bn, c1, h, w}, as)
	b := be.FromFloat32(tensor.Shape{bn, c2, h, w}, bs)
	var want []float64
	for i := 0; i < bn; i++ {
		for _, v := range as[i*c1*h*w : (i+1)*c1*h*w] {
			want = append(want, float64(v))
		}
		for _, v := range bs[i*c2*h*w : (i+1)*c2*h*w] {
			want = append(want, float64(v))
		}
	}
	check(t, "ConcatChannels", be.ConcatChannels(a, b), tensor.Shape{bn, c1 + c2, h, w}, want, be, 0)
	mustFail(t, "ConcatChannels", func() {
		be.ConcatChannels(a, be.FromFloat32(tensor.Shape{bn, c2, h, w + 1}, make([]float32, bn*c2*h*(w+1))))
	}, "(2, 3, 7, 9)", "(2, 5, 7, 10)")

	up := make([]float64, bn*c1*4*h*w)
	for p := 0; p < bn*c1; p++ {
		for y := 0; y < 2*h; y++ {
			for x := 0; x < 2*w; x++ {
				up[(p*2*h+y)*2*w+x] = float64(as[(p*h+y/2)*w+x/2])
			}
		}
	}
	check(t, "UpsampleNearest2x", be.UpsampleNearest2x(a), tensor.Shape{bn, c1, 2 * h, 2 * w}, up, be, 0)

	tok := make([]float64, len(bs))
	for i := 0; i < bn; i++ {
		for c := 0; c < c2; c++ {
			for p := 0; p < h*w; p++ {
				tok[(i*h*w+p)*c2+c] = float64(bs[(i*c2+c)*h*w+p])
			}
		}
	}
	tt := be.ImageToTokens(b)
	check(t, "ImageToTokens", tt, tensor.Shape{bn, h * w, c2}, tok, be, 0)
	back := make([]float64, len(bs))
	for i, v := range bs {
		back[i] = float64(v)
	}
	check(t, "TokensToImage", be.TokensToImage(tt, h, w), tensor.Shape{bn, c2, h, w}, back, be, 0)
	// A round trip through a large image crosses several transpose tiles.
	big := randn(r, 1*70*33*35)
	bigT := be.FromFloat32(tensor.Shape{1, 70, 33, 35}, big)
	rt := be.ToFloat32(be.TokensToImage(be.ImageToTokens(bigT), 33, 35))
	for i := range big {
		if rt[i] != big[i] {
			t.Fatalf("round trip differs at %d", i)
		}
	}
	mustFail(t, "TokensToImage", func() { be.TokensToImage(tt, h, w+1) }, "(2, 63, 5)")
	mustFail(t, "ImageToTokens", func() { be.ImageToTokens(tt) }, "(2, 63, 5)")
}
