package validate

import (
	"math"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/server/jobs"
)

// Limits and defaults of the hires fix.
const (
	MaxHiresScale       = 4.0
	DefaultHiresDenoise = 0.5
)

// HiresRequest is the hires field of a job request: AUTOMATIC1111's hires
// fix. width and height are then the first pass's size; the images come
// out at scale × that size, or at width × height here (one of them absent
// or 0: the first pass's aspect ratio), rounded down to multiples of 8.
type HiresRequest struct {
	Scale  *float64 `json:"scale,omitempty"`
	Width  *int     `json:"width,omitempty"`
	Height *int     `json:"height,omitempty"`
	// Upscaler is "latent" (default) or "lanczos".
	Upscaler string `json:"upscaler,omitempty"`
	// Steps is the second pass's step count (absent or 0: the job's
	// steps); as in img2img the last denoise × steps of them run.
	Steps *int `json:"steps,omitempty"`
	// Denoise is the second pass's denoising strength in (0, 1]
	// (default 0.5).
	Denoise *float64 `json:"denoise,omitempty"`
}

// planHires checks a request's hires field against the tenant's and the
// profile's caps (the hires size counts for max_pixels, the second pass's
// steps for max_steps) and copies it into params.
func (v *Validator) planHires(p auth.Principal, r *JobRequest, params *jobs.Params, hasInit bool) *apierr.Error {
	h := r.Hires
	if h == nil {
		return nil
	}
	switch {
	case hasInit || r.Mask != "" || r.Outpaint != nil:
		return apierr.Invalid("hires", "hires starts from text: it does not combine with init_image, mask or outpaint")
	case h.Scale != nil && (h.Width != nil || h.Height != nil):
		return apierr.Invalid("hires", "give hires.scale or hires.width/height, not both")
	case h.Upscaler != "" && h.Upscaler != "latent" && h.Upscaler != "lanczos":
		return apierr.Invalid("hires.upscaler", "hires.upscaler must be latent or lanczos")
	}
	out := jobs.Hires{Upscaler: h.Upscaler, Denoise: DefaultHiresDenoise}
	if out.Upscaler == "" {
		out.Upscaler = "latent"
	}
	switch {
	case h.Scale != nil:
		s := *h.Scale
		if math.IsNaN(s) || s <= 1 || s > MaxHiresScale {
			return apierr.Invalid("hires.scale", "hires.scale must be above 1 and at most %g", MaxHiresScale)
		}
		out.Scale = s
	default:
		hw, hh := 0, 0
		if h.Width != nil {
			hw = *h.Width
		}
		if h.Height != nil {
			hh = *h.Height
		}
		if hw < 0 || hh < 0 || hw%8 != 0 || hh%8 != 0 || (hw == 0 && hh == 0) {
			return apierr.Invalid("hires.width", "hires needs a scale, or a width and/or height that are positive multiples of 8")
		}
		out.Width, out.Height = hw, hh
	}
	w, ht := out.Size(params.Width, params.Height)
	if w < MinSide || ht < MinSide || w > MaxSide || ht > MaxSide {
		return apierr.Invalid("hires", "the hires size %dx%d must have sides from %d to %d", w, ht, MinSide, MaxSide)
	}
	pr := v.Profiles()[params.Profile]
	if px := w * ht; px > p.Quota.MaxPixels || px > pr.MaxPixels {
		return apierr.Limit("hires", "the hires size %dx%d = %d pixels exceeds max_pixels (tenant %d, %s profile %d)", w, ht, px, p.Quota.MaxPixels, params.Profile, pr.MaxPixels)
	}
	if h.Steps != nil {
		s := *h.Steps
		if s < 0 {
			return apierr.Invalid("hires.steps", "hires.steps must not be negative")
		}
		if s > p.Quota.MaxSteps || s > pr.MaxSteps {
			return apierr.Limit("hires.steps", "hires.steps=%d exceeds max_steps (tenant %d, %s profile %d)", s, p.Quota.MaxSteps, params.Profile, pr.MaxSteps)
		}
		out.Steps = s
	}
	if h.Denoise != nil {
		d := *h.Denoise
		if math.IsNaN(d) || d <= 0 || d > 1 {
			return apierr.Invalid("hires.denoise", "hires.denoise must be in (0, 1]")
		}
		out.Denoise = d
	}
	steps := out.Steps
	if steps == 0 {
		steps = params.Steps
	}
	if int(float64(steps)*out.Denoise) < 1 {
		return apierr.Invalid("hires.denoise", "hires.denoise %g of %d steps leaves no step to run", out.Denoise, steps)
	}
	params.Hires = &out
	return nil
}
