package cuda

import (
	"context"
	"testing"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// generate runs a txt2img job on be with the fixture model.
func generate(t *testing.T, be backend.Backend, req pipeline.Request) *pipeline.Result {
	t.Helper()
	p, err := pipeline.Load(context.Background(), be, fixtures.Require(t, "sd15-tiny/model"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	res, err := p.Generate(context.Background(), req, nil)
	if err != nil {
		t.Fatalf("%s: %v", be.Name(), err)
	}
	return res
}

// TestPipelineMatchesCPU runs whole txt2img jobs (text encoder, sampler loop
// with batched CFG through captured graphs, VAE) on each target and compares
// the final latents and images with the CPU backend's, and in float32 also
// with the diffusers reference.
func TestPipelineMatchesCPU(t *testing.T) {
	refPath := fixtures.Require(t, "sd15-tiny/reference.safetensors")
	ref, err := safetensors.Open(refPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	wantDiffusers, _, err := safetensors.Float32(ref, "pipe/txt2img_euler/latents")
	if err != nil {
		t.Fatal(err)
	}
	reqs := []pipeline.Request{
		{Prompt: "a red circle on a blue background", Width: 64, Height: 64, Steps: 8, Guidance: 7.5, Seed: 1234, Sampler: "euler"},
		{Prompt: "a red circle on a blue background", NegativePrompt: "blurry", Width: 64, Height: 64, Steps: 6, N: 2, Guidance: 6, Seed: 7, Sampler: "dpmpp_2m"},
	}
	for i, req := range reqs {
		want := generate(t, cpu.New(), req)
		for _, tg := range targets(t) {
			got := generate(t, tg.be, req)
			if i > 0 && tg.be.ActivationDType() != tensor.F16 {
				continue // the second case covers batching and negative prompts once
			}
			tol := tg.tol
			if tol < 1e-3 {
				tol = 1e-3 // end to end in float32, as the brief bounds it
			}
			if e := fixtures.RelErr(got.Latents, want.Latents); e > tol {
				t.Errorf("case %d on %s: latents relative error %.3g > %.3g", i, tg.name, e, tol)
			} else {
				t.Logf("case %d on %s: latents relative error %.3g", i, tg.name, e)
			}
			imgTol := tol
			if tg.be.ActivationDType() == tensor.F16 {
				// the pipeline runs the VAE in bf16 next to an fp16 UNet
				imgTol = max(tol, tolFor(tensor.BF16))
			}
			if e := fixtures.RelErr(got.Pixels, want.Pixels); e > imgTol {
				t.Errorf("case %d on %s: image relative error %.3g > %.3g", i, tg.name, e, imgTol)
			} else {
				t.Logf("case %d on %s: image relative error %.3g", i, tg.name, e)
			}
			if i == 0 && tg.tol < 1e-3 {
				if e := fixtures.RelErr(got.Latents, wantDiffusers); e > 1e-3 {
					t.Errorf("%s: latents vs diffusers relative error %.3g", tg.name, e)
				}
			}
		}
	}
}
