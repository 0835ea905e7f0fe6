package pipeline

import (
	"context"
	"testing"
)

// BenchmarkGenerateFixture times a whole txt2img job (8 Euler steps with
// CFG, 64×64, decode included) on the tiny fixture model on the CPU.
func BenchmarkGenerateFixture(b *testing.B) {
	e := loadEnv(b)
	req := Request{Prompt: "a red circle on a blue background", Steps: 8, Guidance: 7.5, Seed: 1234,
		Width: 64, Height: 64, Sampler: "euler"}
	for i := 0; i < b.N; i++ {
		if _, err := e.pipe.Generate(context.Background(), req, nil); err != nil {
			b.Fatal(err)
		}
	}
}
