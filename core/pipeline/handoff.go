package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math"
)

// cutoffCount counts the evaluations whose timestep is at least
// diffusers' discrete cutoff round(T − frac·T): those a run with
// denoising_end frac performs, and those a run with denoising_start frac
// skips.
func cutoffCount(ts []float64, frac float64, trainSteps int) int {
	cut := math.Round(float64(trainSteps) - frac*float64(trainSteps))
	n := 0
	for _, t := range ts {
		if t >= cut {
			n++
		}
	}
	return n
}

// handoffStart returns the first evaluation of a run with denoising_start
// frac, as diffusers' img2img get_timesteps computes it (for second-order
// samplers an even count of remaining evaluations grows by one, so that the
// run never starts between the two evaluations of a step).
func handoffStart(ts []float64, frac float64, trainSteps, order int) (int, error) {
	left := len(ts) - cutoffCount(ts, frac, trainSteps)
	if order == 2 && left%2 == 0 {
		left++
	}
	left = min(left, len(ts))
	if left < 1 {
		return 0, fmt.Errorf("pipeline: denoising_start %v leaves no step to run", frac)
	}
	return len(ts) - left, nil
}

// checkHandoff validates the hand-off fields of a request.
func checkHandoff(req Request, j *job) error {
	if req.DenoisingEnd != 0 && !(req.DenoisingEnd > 0 && req.DenoisingEnd < 1) {
		return fmt.Errorf("pipeline: denoising_end %v must be in (0, 1)", req.DenoisingEnd)
	}
	switch {
	case req.InitLatents == nil && req.DenoisingStart != 0:
		return errors.New("pipeline: denoising_start needs the latents to start from (InitLatents)")
	case req.InitLatents == nil:
		return nil
	case !(req.DenoisingStart > 0 && req.DenoisingStart < 1):
		return fmt.Errorf("pipeline: denoising_start %v must be in (0, 1)", req.DenoisingStart)
	case j.img2img:
		return errors.New("pipeline: give an init image or init latents, not both")
	case len(req.InitLatents) != j.n*j.per:
		return fmt.Errorf("pipeline: init latents hold %d values, want %d×%d×%d×%d", len(req.InitLatents), j.n, j.c, j.h, j.w)
	case req.DenoisingEnd != 0 && req.DenoisingEnd <= req.DenoisingStart:
		return fmt.Errorf("pipeline: denoising_end %v must come after denoising_start %v", req.DenoisingEnd, req.DenoisingStart)
	}
	return nil
}

// Refine runs a request as a base model followed by a refiner, in the
// hand-off diffusers documents for SDXL: the base denoises the timesteps
// above the switch point (denoising_end = switchAt) and the refiner,
// starting from the base's latents without new noise, the rest
// (denoising_start = switchAt), with the same prompts and steps; the
// refiner's generators start again from the request's seeds. The refiner
// decodes the result (unless req.SkipDecode). Progress is reported for
// both runs, the refiner's evaluations numbered after the base's.
func Refine(ctx context.Context, base, refiner *Pipeline, req Request, switchAt float64, onProgress func(Progress)) (*Result, error) {
	if !(switchAt > 0 && switchAt < 1) {
		return nil, fmt.Errorf("pipeline: refiner switch %v must be in (0, 1)", switchAt)
	}
	if req.InitImage != nil || req.InitPixels != nil || req.InitLatents != nil || req.DenoisingEnd != 0 || req.DenoisingStart != 0 {
		return nil, errors.New("pipeline: a refined request starts from noise (no init image, latents or denoising range of its own)")
	}
	if base.def.LatentChannels != refiner.def.LatentChannels || base.def.Factor != refiner.def.Factor {
		return nil, fmt.Errorf("pipeline: base (%d latent channels, factor %d) and refiner (%d, %d) do not share a latent space",
			base.def.LatentChannels, base.def.Factor, refiner.def.LatentChannels, refiner.def.Factor)
	}
	first := req
	first.DenoisingEnd, first.SkipDecode = switchAt, true
	steps := 0
	res, err := base.Generate(ctx, first, func(pr Progress) {
		steps = pr.Step
		if onProgress != nil {
			onProgress(pr)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("pipeline: base: %w", err)
	}
	second := req
	second.InitLatents, second.DenoisingStart, second.Noise = res.Latents, switchAt, nil
	if req.Width == 0 || req.Height == 0 {
		second.Width, second.Height = res.LatentShape[3]*base.def.Factor, res.LatentShape[2]*base.def.Factor
	}
	out, err := refiner.Generate(ctx, second, func(pr Progress) {
		if onProgress != nil {
			pr.Step += steps
			pr.Steps += steps
			onProgress(pr)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("pipeline: refiner: %w", err)
	}
	return out, nil
}
