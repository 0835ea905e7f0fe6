package sample

import "testing"

// BenchmarkStep measures one sampler step on an SD 1.5 512×512 latent
// (4×64×64) for a few samplers.
func BenchmarkStep(b *testing.B) {
	cfg, err := ParseConfig([]byte(sd15Config))
	if err != nil {
		b.Fatal(err)
	}
	const n = 4 * 64 * 64
	x := make([]float32, n)
	out := make([]float32, n)
	for i := range x {
		x[i] = float32(i%97) / 50
		out[i] = float32(i%89) / 45
	}
	noise := func() []float32 { return out }
	for _, name := range []string{"euler", "euler_a", "dpmpp_2m", "unipc"} {
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				s, err := New(cfg, name, 20, Options{})
				if err != nil {
					b.Fatal(err)
				}
				for k := 0; k < 3; k++ {
					if _, _, err := s.Step(k, out, x, noise); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
