package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/kiln-project/kiln/core/resample"
	"github.com/kiln-project/kiln/core/sample"
)

// Hires upscalers (Hires.Upscaler).
const (
	// UpscaleLatent enlarges the first pass's latents bilinearly
	// (AUTOMATIC1111's "Latent"): no decode and encode between the passes.
	UpscaleLatent = "latent"
	// UpscaleLanczos decodes the first pass, enlarges the image with the
	// Lanczos-3 filter and encodes it again (AUTOMATIC1111's "Lanczos").
	UpscaleLanczos = "lanczos"
)

// DefaultHiresDenoise is the second pass's denoising strength when
// Hires.Denoise is 0.
const DefaultHiresDenoise = 0.5

// MaxHiresScale bounds Hires.Scale.
const MaxHiresScale = 4

// Hires is AUTOMATIC1111's hires fix: the request is generated at its own
// size (the model's native size by default), the result is upscaled to
// the hires size, and an image-to-image pass at that size with its own
// steps and denoising strength adds detail. One request, one result at the
// hires size; image i keeps seed+i in both passes.
type Hires struct {
	// Scale multiplies the first pass's size (sides rounded down to the
	// latent factor); or Width and Height give the hires size (one of them
	// 0: the first pass's aspect ratio). Give Scale or a size, not both.
	Scale         float64
	Width, Height int
	// Upscaler is UpscaleLatent ("" too) or UpscaleLanczos.
	Upscaler string
	// Steps is the second pass's schedule length (0: the request's
	// Steps); as in image-to-image the last Denoise·Steps of them run.
	Steps int
	// Denoise is the second pass's strength in (0, 1] (0:
	// DefaultHiresDenoise).
	Denoise float64
}

// On reports whether h asks for a hires pass.
func (h Hires) On() bool { return h != Hires{} }

// hiresInit is the second pass's starting point, made from the first
// pass's result: the upscaled latents (denoiser scale) or the upscaled
// decoded images (N, 3, H, W) in [0, 1], one per image of the batch.
type hiresInit struct {
	latents []float32
	pixels  []float32
}

// hiresPlan is a hires request in flight: the request as given, its
// resolved second-pass settings, and how many evaluations the second pass
// runs (for progress across both).
type hiresPlan struct {
	req           Request
	width, height int
	steps         int
	denoise       float64
	upscaler      string
	second        int // the second pass's evaluations (progress runs across both passes)
}

// planHires validates a hires request and returns its first pass and its
// plan.
func (p *Pipeline) planHires(req Request) (Request, *hiresPlan, error) {
	h := req.Hires
	switch {
	case req.InitImage != nil || req.InitPixels != nil || req.InitLatents != nil:
		return req, nil, errors.New("pipeline: hires fix starts from text (no init image)")
	case req.Edit.on() || req.Edit.MaskBlur != 0 || req.Edit.Fill != "" || req.Edit.FullRes:
		return req, nil, errors.New("pipeline: hires fix does not combine with inpainting or outpainting")
	case req.DenoisingEnd != 0 || req.DenoisingStart != 0:
		return req, nil, errors.New("pipeline: hires fix runs whole schedules (no denoising range)")
	case req.Strength != 0:
		return req, nil, errors.New("pipeline: hires fix takes its strength from hires denoise (no strength)")
	case req.Noise != nil:
		return req, nil, errors.New("pipeline: hires fix draws its own noise (no explicit noise)")
	case math.IsNaN(h.Scale) || h.Scale < 0 || h.Scale > MaxHiresScale:
		return req, nil, fmt.Errorf("pipeline: hires scale %v must be in (1, %d]", h.Scale, MaxHiresScale)
	case h.Scale != 0 && (h.Width != 0 || h.Height != 0):
		return req, nil, errors.New("pipeline: give a hires scale or a hires size, not both")
	case h.Scale == 0 && h.Width == 0 && h.Height == 0:
		return req, nil, errors.New("pipeline: hires fix needs a scale or a size")
	case h.Width < 0 || h.Height < 0 || h.Width > MaxSide || h.Height > MaxSide:
		return req, nil, fmt.Errorf("pipeline: hires size %dx%d must be within 0..%d", h.Width, h.Height, MaxSide)
	case h.Steps < 0 || h.Steps > MaxSteps:
		return req, nil, fmt.Errorf("pipeline: hires steps %d must be in 0..%d", h.Steps, MaxSteps)
	case math.IsNaN(h.Denoise) || h.Denoise < 0 || h.Denoise > 1:
		return req, nil, fmt.Errorf("pipeline: hires denoise %v must be in (0, 1]", h.Denoise)
	}
	pl := &hiresPlan{req: req, steps: h.Steps, denoise: h.Denoise, upscaler: h.Upscaler}
	switch pl.upscaler {
	case "":
		pl.upscaler = UpscaleLatent
	case UpscaleLatent, UpscaleLanczos:
	default:
		return req, nil, fmt.Errorf("pipeline: unknown hires upscaler %q (want %q or %q)", h.Upscaler, UpscaleLatent, UpscaleLanczos)
	}
	if pl.steps == 0 {
		pl.steps = max(req.Steps, 0)
		if pl.steps == 0 {
			pl.steps = 20
		}
	}
	if pl.denoise == 0 {
		pl.denoise = DefaultHiresDenoise
	}
	f := p.def.Factor
	w, ht := req.Width, req.Height
	if w == 0 {
		w = p.def.Width
	}
	if ht == 0 {
		ht = p.def.Height
	}
	switch {
	case h.Scale != 0:
		if h.Scale <= 1 {
			return req, nil, fmt.Errorf("pipeline: hires scale %v must be in (1, %d]", h.Scale, MaxHiresScale)
		}
		pl.width, pl.height = int(float64(w)*h.Scale)/f*f, int(float64(ht)*h.Scale)/f*f
	case h.Width == 0:
		pl.width, pl.height = h.Height*w/ht/f*f, h.Height
	case h.Height == 0:
		pl.width, pl.height = h.Width, h.Width*ht/w/f*f
	default:
		pl.width, pl.height = h.Width, h.Height
	}
	switch {
	case pl.width%f != 0 || pl.height%f != 0:
		return req, nil, fmt.Errorf("pipeline: hires size %dx%d is not divisible by the VAE factor %d", pl.width, pl.height, f)
	case pl.width < f || pl.height < f || pl.width > MaxSide || pl.height > MaxSide:
		return req, nil, fmt.Errorf("pipeline: hires size %dx%d must be within %d..%d", pl.width, pl.height, f, MaxSide)
	}
	second, err := p.evaluations(req.Sampler, pl.steps, req.Eta, pl.denoise)
	if err != nil {
		return req, nil, err
	}
	pl.second = second
	first := req
	first.Hires = Hires{}
	first.SkipDecode = pl.upscaler == UpscaleLatent
	return first, pl, nil
}

// evaluations is the number of model evaluations an image-to-image job of
// steps steps at strength runs with the named sampler.
func (p *Pipeline) evaluations(sampler string, steps int, eta, strength float64) (int, error) {
	s, err := sample.New(p.sched, sampler, steps, sample.Options{Eta: eta})
	if err != nil {
		return 0, fmt.Errorf("pipeline: %w", err)
	}
	run := min(int(float64(steps)*strength), steps)
	if run < 1 {
		return 0, fmt.Errorf("pipeline: hires denoise %v leaves no step of %d to run", strength, steps)
	}
	return len(s.Timesteps()) - (steps-run)*s.Order(), nil
}

// secondPass turns a finished first pass into the hires pass: its result
// upscaled to the hires size as the init latents or init images of an
// image-to-image job with the hires steps and strength, the same prompts,
// seeds and sampler.
func (p *Pipeline) secondPass(ctx context.Context, st *batchState) (*batchState, error) {
	pl, res := st.hires, st.res
	req := pl.req
	req.Hires = Hires{}
	req.Width, req.Height = pl.width, pl.height
	req.Steps, req.Strength = pl.steps, pl.denoise
	n := res.LatentShape[0]
	var init hiresInit
	var err error
	if pl.upscaler == UpscaleLatent {
		s := res.LatentShape
		f := p.def.Factor
		init.latents, err = resample.Bilinear(res.Latents, s[0]*s[1], s[2], s[3], pl.height/f, pl.width/f)
	} else {
		s := res.PixelShape
		init.pixels, err = resample.Lanczos(res.Pixels, s[0]*s[1], s[2], s[3], pl.height, pl.width)
		for i, v := range init.pixels {
			init.pixels[i] = min(max(v, 0), 1)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("pipeline: hires upscale: %w", err)
	}
	if n != max(req.N, 1) {
		return nil, fmt.Errorf("pipeline: the first pass made %d images, want %d", n, max(req.N, 1))
	}
	req.hires = &init
	next, err := p.prepare(ctx, st.index, BatchJob{Ctx: st.ctx, Request: req})
	if err != nil {
		return nil, fmt.Errorf("pipeline: hires pass: %w", err)
	}
	next.stepBase = st.stepBase + st.total
	next.hiresFrom = [2]int{st.req.Width, st.req.Height}
	next.warnings = append(append([]string(nil), st.warnings...), next.warnings...)
	return next, nil
}

// encodeHires encodes the upscaled images of the batch, one per image,
// and samples each posterior with its image's generator.
func (p *Pipeline) encodeHires(ctx context.Context, j *job) ([]float32, error) {
	return p.encodePixels(ctx, j, j.req.hires.pixels, j.n)
}
