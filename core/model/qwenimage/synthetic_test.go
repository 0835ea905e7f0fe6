package qwenimage_test

import (
	"context"
	"math"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/model/qwenimage"
	"github.com/kiln-project/kiln/core/pipeline"
)

// TestSyntheticGenerates: the random-weight synthetic checkpoint builds
// through the family and generates a finite image with true CFG, the same
// for the same seed.
func TestSyntheticGenerates(t *testing.T) {
	run := func() *pipeline.Result {
		c, err := qwenimage.Synthetic(7)
		if err != nil {
			t.Fatal(err)
		}
		if d := c.Defaults(); d.LatentChannels != 16 || d.Factor != 8 {
			t.Fatalf("defaults %+v", d)
		}
		md, err := c.Build(cpu.New())
		if err != nil {
			c.Close()
			t.Fatal(err)
		}
		p, err := pipeline.New(md)
		if err != nil {
			md.Close()
			t.Fatal(err)
		}
		defer p.Close()
		res, err := p.Generate(context.Background(), pipeline.Request{Prompt: "a fox", Width: 64, Height: 48, Steps: 2, Guidance: 4, Seed: 1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b := run(), run()
	if len(a.Pixels) != 3*64*48 || a.LatentShape != [4]int{1, 16, 6, 8} {
		t.Fatalf("pixels %d, latents %v", len(a.Pixels), a.LatentShape)
	}
	for i, v := range a.Latents {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) || v != b.Latents[i] {
			t.Fatalf("latent %d: %v vs %v", i, v, b.Latents[i])
		}
	}
}
