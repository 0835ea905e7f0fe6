package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// BenchmarkConv2D measures 3×3 convolutions at UNet and VAE sizes.
func BenchmarkConv2D(b *testing.B) {
	for _, c := range []struct{ cin, cout, h, stride int }{
		{320, 320, 64, 1}, {640, 640, 32, 1}, {1280, 1280, 16, 1}, {1280, 1280, 8, 1}, {2560, 1280, 8, 1}, {320, 320, 64, 2}, {128, 128, 256, 1},
	} {
		b.Run(fmt.Sprintf("%dto%d_%dx%d_s%d", c.cin, c.cout, c.h, c.h, c.stride), func(b *testing.B) {
			be := New()
			r := rand.New(rand.NewPCG(1, 1))
			x := be.FromFloat32(tensor.Shape{1, c.cin, c.h, c.h}, randn(r, c.cin*c.h*c.h))
			w := be.FromFloat32(tensor.Shape{c.cout, c.cin, 3, 3}, randn(r, c.cout*c.cin*9))
			bias := be.FromFloat32(tensor.Shape{c.cout}, randn(r, c.cout))
			p := backend.SymmetricPad(c.stride, 1)
			var flops float64
			b.ResetTimer()
			for range b.N {
				y := be.Conv2D(x, w, bias, p)
				flops += 2 * float64(y.Numel()) * float64(c.cin*9)
				be.Free(y)
			}
			b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkAttention measures self-attention at the UNet's largest size
// and cross-attention against 77 text tokens.
func BenchmarkAttention(b *testing.B) {
	for _, c := range []struct{ lq, lk, f, heads int }{
		{4096, 4096, 320, 8}, {4096, 77, 320, 8}, {1024, 1024, 640, 8}, {77, 77, 768, 12},
	} {
		b.Run(fmt.Sprintf("q%d_k%d_f%d_h%d", c.lq, c.lk, c.f, c.heads), func(b *testing.B) {
			be := New()
			r := rand.New(rand.NewPCG(1, 1))
			q := be.FromFloat32(tensor.Shape{1, c.lq, c.f}, randn(r, c.lq*c.f))
			k := be.FromFloat32(tensor.Shape{1, c.lk, c.f}, randn(r, c.lk*c.f))
			v := be.FromFloat32(tensor.Shape{1, c.lk, c.f}, randn(r, c.lk*c.f))
			p := backend.AttentionParams{Heads: c.heads, Scale: float32(1 / math.Sqrt(float64(c.f/c.heads)))}
			b.ResetTimer()
			for range b.N {
				be.Free(be.Attention(q, k, v, p))
			}
			b.ReportMetric(4*float64(c.lq)*float64(c.lk)*float64(c.f)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkNormAndActivations measures the memory-bound ops at UNet sizes
// (GB/s counts the bytes read and written once).
func BenchmarkNormAndActivations(b *testing.B) {
	be := New()
	r := rand.New(rand.NewPCG(1, 1))
	img := be.FromFloat32(tensor.Shape{1, 320, 64, 64}, randn(r, 320*64*64))
	tok := be.FromFloat32(tensor.Shape{1, 4096, 320}, randn(r, 4096*320))
	ff := be.FromFloat32(tensor.Shape{1, 4096, 2560}, randn(r, 4096*2560))
	w320, b320 := be.FromFloat32(tensor.Shape{320}, randn(r, 320)), be.FromFloat32(tensor.Shape{320}, randn(r, 320))
	for _, c := range []struct {
		name  string
		bytes int
		op    func() *tensor.Tensor
	}{
		{"GroupNormSiLU_320x64x64", 8 * img.Numel(), func() *tensor.Tensor { return be.GroupNorm(img, w320, b320, 32, 1e-5, true) }},
		{"GroupNorm_320x64x64", 8 * img.Numel(), func() *tensor.Tensor { return be.GroupNorm(img, w320, b320, 32, 1e-5, false) }},
		{"LayerNorm_4096x320", 8 * tok.Numel(), func() *tensor.Tensor { return be.LayerNorm(tok, w320, b320, 1e-5) }},
		{"SiLU_320x64x64", 8 * img.Numel(), func() *tensor.Tensor { return be.SiLU(img) }},
		{"GEGLU_4096x2560", 6 * ff.Numel(), func() *tensor.Tensor { return be.GEGLU(ff) }},
		{"Add_320x64x64", 12 * img.Numel(), func() *tensor.Tensor { return be.Add(img, img) }},
		{"ImageToTokens_320x64x64", 8 * img.Numel(), func() *tensor.Tensor { return be.ImageToTokens(img) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				be.Free(c.op())
			}
			b.ReportMetric(float64(c.bytes)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
	}
}
