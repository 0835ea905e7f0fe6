package a1111

import (
	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/validate"
)

// hires is the hires-fix part of a txt2img request, with AUTOMATIC1111's
// names: enable_hr turns it on; hr_resize_x/y (either non-zero) give the
// size, else hr_scale (default 2); hr_upscaler "Latent" (default) or
// "Lanczos"; hr_second_pass_steps (0: the job's steps); the request's
// denoising_strength is the second pass's (default 0.7, A1111's).
type hires struct {
	EnableHR          *bool    `json:"enable_hr"`
	HRScale           *float64 `json:"hr_scale"`
	HRUpscaler        *string  `json:"hr_upscaler"`
	HRSecondPassSteps *int     `json:"hr_second_pass_steps"`
	HRResizeX         *int     `json:"hr_resize_x"`
	HRResizeY         *int     `json:"hr_resize_y"`
}

// hiresFields are the txt2img request fields hires reads.
var hiresFields = []string{"enable_hr", "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y"}

// hiresUpscalers maps A1111's upscaler names to Kiln's.
var hiresUpscalers = map[string]string{"": "latent", "Latent": "latent", "Lanczos": "lanczos"}

// defaultHiresDenoise is A1111's denoising strength of a hires request
// that sends none.
const defaultHiresDenoise = 0.7

// apply sets a native job request's hires field from h and the request's
// denoising strength.
func (h *hires) apply(jr *validate.JobRequest, denoise *float64) *apierr.Error {
	if h.EnableHR == nil || !*h.EnableHR {
		return nil
	}
	hr := &validate.HiresRequest{}
	up := ""
	if h.HRUpscaler != nil {
		up = *h.HRUpscaler
	}
	u, ok := hiresUpscalers[up]
	if !ok {
		return apierr.Invalid("hr_upscaler", "hr_upscaler %q is not available: Kiln has Latent and Lanczos", up)
	}
	hr.Upscaler = u
	rx, ry := 0, 0
	if h.HRResizeX != nil {
		rx = *h.HRResizeX
	}
	if h.HRResizeY != nil {
		ry = *h.HRResizeY
	}
	if rx != 0 || ry != 0 {
		hr.Width, hr.Height = &rx, &ry
	} else {
		s := 2.0
		if h.HRScale != nil {
			s = *h.HRScale
		}
		hr.Scale = &s
	}
	if h.HRSecondPassSteps != nil && *h.HRSecondPassSteps != 0 {
		hr.Steps = h.HRSecondPassSteps
	}
	d := defaultHiresDenoise
	if denoise != nil {
		d = *denoise
	}
	hr.Denoise = &d
	jr.Hires = hr
	return nil
}
