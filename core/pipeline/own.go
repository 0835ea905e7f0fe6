package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kiln-project/kiln/core/family"
)

// ownSampler names the sampler of families that run their own loop
// (family.Generator): flow-matching Euler with the resolution-dependent
// shift.
const ownSampler = "flowmatch_euler"

// Stepwise reports whether the model runs on the shared sampler loop, so
// that running batches (NewRunning) can take its jobs; a family with its
// own loop (family.Generator) runs through Generate and GenerateBatch.
func (p *Pipeline) Stepwise() bool {
	_, own := p.m.(family.Generator)
	return !own
}

// generateOwn runs jobs on a model with its own denoising loop: the
// pipeline resolves each request (sizes, seeds, noise, the init image's
// posterior sample), the family denoises image by image, and the pipeline
// decodes. Settings the loop does not take are refused.
func (p *Pipeline) generateOwn(ctx context.Context, g family.Generator, jobs []BatchJob, onProgress func(int, Progress)) []BatchResult {
	out := make([]BatchResult, len(jobs))
	evals := 0
	for k, bj := range jobs {
		jctx := bj.Ctx
		if jctx == nil {
			jctx = ctx
		}
		var cb func(Progress)
		if onProgress != nil {
			cb = func(pr Progress) { onProgress(k, pr) }
		}
		out[k].Result, out[k].Err = p.runOwn(jctx, g, bj.Request, &evals, cb)
	}
	return out
}

// unsupportedOwn names the first request setting a family's own loop does
// not take ("" when none).
func unsupportedOwn(r Request) string {
	switch {
	case r.Sampler != "" && r.Sampler != ownSampler:
		return "sampler " + r.Sampler + " (the family samples with " + ownSampler + ")"
	case r.Prompt2 != "" || r.NegativePrompt2 != "":
		return "second-encoder prompts"
	case r.ClipSkip > 1:
		return "clip skip"
	case r.GuidanceRescale != 0:
		return "guidance rescale"
	case r.Eta != 0:
		return "eta"
	case !r.Micro.IsZero():
		return "micro-conditioning"
	case r.DenoisingEnd != 0 || r.DenoisingStart != 0 || r.InitLatents != nil:
		return "denoising start/end (refiner hand-off)"
	case r.Variation.on():
		return "variation seeds"
	case r.Edit.Mask != nil || !r.Edit.Outpaint.zero():
		return "inpainting and outpainting"
	case len(r.LoRAs) > 0 || len(r.Embeddings) > 0:
		return "LoRAs and embeddings"
	case r.Hires.On():
		return "hires fix"
	}
	return ""
}

// runOwn runs one job through g.
func (p *Pipeline) runOwn(ctx context.Context, g family.Generator, req Request, evals *int, onProgress func(Progress)) (*Result, error) {
	if what := unsupportedOwn(req); what != "" {
		return nil, fmt.Errorf("pipeline: this model family runs its own sampling loop and does not take %s", what)
	}
	if req.Steps == 0 && p.def.Steps > 0 {
		req.Steps = p.def.Steps
	}
	j, err := p.resolve(req)
	if err != nil {
		return nil, err
	}
	req = j.req
	var init []float32
	if j.img2img {
		if init, err = p.encodeInit(ctx, j); err != nil {
			return nil, err
		}
	}
	noise := req.Noise
	if noise == nil {
		noise = j.initialNoise()
	}
	res := &Result{Seeds: j.seeds, Sampler: ownSampler, LatentShape: [4]int{j.n, j.c, j.h, j.w}, Warnings: p.sizeWarnings(j)}
	for i := 0; i < j.n; i++ {
		in := family.GenerateInput{Prompt: req.Prompt, NegativePrompt: req.NegativePrompt, Guidance: req.Guidance,
			Width: req.Width, Height: req.Height, Steps: req.Steps, Noise: noise[i*j.per : (i+1)*j.per]}
		if init != nil {
			in.Init, in.Strength = init[i*j.per:(i+1)*j.per], req.Strength
		}
		last := time.Now()
		in.OnStep = func(step, steps int, t float64) error {
			*evals++
			if onProgress != nil {
				now := time.Now()
				onProgress(Progress{Step: i*steps + step, Steps: j.n * steps, Timestep: t, Eval: *evals, Batch: 1, StepTime: now.Sub(last)})
				last = now
			}
			return ctx.Err()
		}
		x, err := g.Generate(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		if len(x) != j.per {
			return nil, fmt.Errorf("pipeline: the model's loop returned %d latent values, want %d", len(x), j.per)
		}
		res.Latents = append(res.Latents, x...)
	}
	if req.SkipDecode {
		return res, nil
	}
	z := append([]float32(nil), res.Latents...)
	if err := p.m.FromDenoiser(z, res.LatentShape); err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	img, ishape, err := p.decodeLatents(ctx, z, res.LatentShape)
	if err != nil {
		return nil, fmt.Errorf("pipeline: vae decode: %w", err)
	}
	if ishape[1] != 3 {
		return nil, errors.New("pipeline: the vae did not decode to 3 channels")
	}
	for i, v := range img {
		img[i] = min(max(v/2+0.5, 0), 1)
	}
	res.Pixels, res.PixelShape = img, ishape
	res.Images = PixelsToImages(img, ishape)
	return res, nil
}
