package safetensors

import (
	"math/rand/v2"
	"testing"

	"github.com/kiln-project/kiln/internal/fixtures"
)

// BenchmarkOpen measures opening (mapping and validating) the fixture UNet.
func BenchmarkOpen(b *testing.B) {
	p := fixtures.Require(b, "sd15-tiny/model/unet/diffusion_pytorch_model.safetensors")
	for b.Loop() {
		f, err := Open(p)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

func benchConvert(b *testing.B, build func(string, []int, []float32) WriteTensor) {
	const n = 1 << 20
	v := make([]float32, n)
	r := rand.New(rand.NewPCG(1, 1))
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	m, err := NewMemory([]WriteTensor{build("w", []int{n}, v)})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(n * 4)
	for b.Loop() {
		if _, _, err := Float32(m, "w"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFloat32FromF16 measures F16 → float32 conversion (bytes are of
// the float32 output).
func BenchmarkFloat32FromF16(b *testing.B) { benchConvert(b, F16Tensor) }

// BenchmarkFloat32FromBF16 measures BF16 → float32 conversion.
func BenchmarkFloat32FromBF16(b *testing.B) { benchConvert(b, BF16Tensor) }
