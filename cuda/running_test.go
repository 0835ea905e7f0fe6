package cuda

import (
	"context"
	"testing"

	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/core/pipeline/pipelinetest"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// TestRunningBatchMatchesAlone runs jobs that differ in sampler, steps,
// guidance, seeds and image count through one running batch in fp16 —
// joining at different steps, with the row buckets a GPU worker uses — and
// checks each against the same job run alone on the same device, within
// fp16 tolerance.
func TestRunningBatchMatchesAlone(t *testing.T) {
	model := fixtures.Require(t, "sd15-tiny/model")
	reqs := []pipeline.Request{
		{Prompt: "a red circle", NegativePrompt: "blurry", Width: 64, Height: 64, Steps: 6, Guidance: 7.5, Seed: 1, Sampler: "euler"},
		{Prompt: "a blue square", Width: 64, Height: 64, Steps: 4, Guidance: 3, Seed: 2, N: 2, Sampler: "euler_a"},
		{Prompt: "two dots", Width: 64, Height: 64, Steps: 5, Guidance: 1, Seed: 3, Sampler: "dpmpp_2m"},
	}
	joinAt := []int{0, 0, 2}
	bucket := func(rows int) int {
		b := 1
		for b < rows {
			b *= 2
		}
		return b
	}
	for _, tg := range targets(t) {
		if tg.be.ActivationDType() != tensor.F16 {
			continue
		}
		t.Run(tg.name, func(t *testing.T) {
			p, err := pipeline.Load(context.Background(), tg.be, model)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			r := p.NewRunning(context.Background())
			r.SetRowBuckets(bucket)
			got := pipelinetest.RunStaggered(t, r, reqs, joinAt)
			worst := 0.0
			for k, req := range reqs {
				alone, err := p.Generate(context.Background(), req, nil)
				if err != nil {
					t.Fatal(err)
				}
				lat := fixtures.RelErr(got[k].Latents, alone.Latents)
				px := fixtures.RelErr(got[k].Pixels, alone.Pixels)
				if lat > tg.tol || px > tg.tol {
					t.Errorf("job %d in the running batch differs from alone: latents %.2e, pixels %.2e (tolerance %.0e)", k, lat, px, tg.tol)
				}
				worst = max(worst, lat, px)
			}
			t.Logf("largest relative difference running batch vs alone: %.2e", worst)
		})
	}
}
