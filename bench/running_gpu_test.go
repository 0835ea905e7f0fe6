package bench

import (
	"context"
	"errors"
	"testing"

	"github.com/kiln-project/kiln/core/model/families"
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/core/pipeline/pipelinetest"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// TestRunningBatchMatchesAloneOnGPU runs SD 1.5 (random fp16 weights) on
// the GPU in fp16 with jobs that differ in sampler, steps, guidance, seeds
// and image count through one running batch — joining at different steps,
// with the row buckets GPU workers use — and checks each against the same
// job run alone within fp16 tolerance. It needs a GPU (the CPU-side tests
// of core/pipeline and cuda cover the same on the CPU and the emulator).
func TestRunningBatchMatchesAloneOnGPU(t *testing.T) {
	dev, err := cuda.Open(0, cuda.DefaultOptions())
	if errors.Is(err, cuda.ErrNoGPU) {
		t.Skipf("no GPU: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	m, _, cleanup, err := Synthetic("sd15", 3)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	cp, err := families.FromCheckpoint(m)
	if err != nil {
		t.Fatal(err)
	}
	md, err := cp.Build(dev.Backend(tensor.F16))
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(md)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	reqs := []pipeline.Request{
		{Prompt: "a red circle", NegativePrompt: "blurry", Steps: 8, Guidance: 7.5, Seed: 1, Sampler: "euler"},
		{Prompt: "a blue square", Steps: 6, Guidance: 3, Seed: 2, N: 2, Sampler: "euler_a"},
		{Prompt: "two dots", Steps: 5, Guidance: 1, Seed: 3, Sampler: "dpmpp_2m"},
		{Prompt: "a lighthouse", Steps: 4, Guidance: 7.5, Seed: 4, N: 3, Sampler: "ddim"},
	}
	joinAt := []int{0, 0, 2, 3}
	r := p.NewRunning(context.Background())
	r.SetRowBuckets(func(rows int) int { return (rows + 7) / 8 * 8 })
	for k := range reqs {
		reqs[k].Width, reqs[k].Height = 256, 256
	}
	got := pipelinetest.RunStaggered(t, r, reqs, joinAt)
	worst := 0.0
	for k, req := range reqs {
		alone, err := p.Generate(context.Background(), req, nil)
		if err != nil {
			t.Fatal(err)
		}
		lat := fixtures.RelErr(got[k].Latents, alone.Latents)
		px := fixtures.RelErr(got[k].Pixels, alone.Pixels)
		t.Logf("job %d (%s, %d steps, guidance %g, n %d): latents %.2e, pixels %.2e", k, req.Sampler, req.Steps, req.Guidance, max(req.N, 1), lat, px)
		// latents in fp16 (UNet), pixels through the VAE, which runs in
		// bf16 on fp16 devices: the tolerances of those precisions
		if lat > 1e-2 || px > 3e-2 {
			t.Errorf("job %d in the running batch differs from alone beyond tolerance (latents fp16 1e-2, pixels bf16 3e-2)", k)
		}
		worst = max(worst, lat, px)
	}
	t.Logf("largest relative difference running batch vs alone on %s: %.2e", dev.Info().Name, worst)
}
