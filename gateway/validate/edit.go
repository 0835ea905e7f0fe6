package validate

import (
	"math"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/server/jobs"
)

// Limits of the editing fields.
const (
	MaxMaskBlur           = 256
	DefaultMaskBlur       = 4
	MaxFullResPadding     = 1024
	DefaultFullResPadding = 32
)

// inpaintFills are the accepted inpaint_fill values.
var inpaintFills = map[string]bool{"": true, "original": true, "latent_noise": true, "latent_nothing": true}

// planEdit checks a request's inpainting, outpainting and variation-seed
// fields and copies them into params (the mask's object name is set once
// it is stored).
func planEdit(r *JobRequest, params *jobs.Params, hasInit bool) *apierr.Error {
	if r.SubseedStrength != nil {
		s := *r.SubseedStrength
		if math.IsNaN(s) || s < 0 || s > 1 {
			return apierr.Invalid("subseed_strength", "subseed_strength must be in [0, 1]")
		}
		params.SubseedStrength = s
	}
	if r.Subseed != nil {
		if *r.Subseed > MaxSeed {
			return apierr.Invalid("subseed", "subseed must be at most %d", uint64(MaxSeed))
		}
		params.Subseed = *r.Subseed
	} else if params.SubseedStrength != 0 {
		params.Subseed = RandomSeed()
	}
	edit := r.Mask != "" || r.Outpaint != nil
	switch {
	case edit && !hasInit:
		field := "mask"
		if r.Mask == "" {
			field = "outpaint"
		}
		return apierr.Invalid(field, "%s edits an image: give init_image", field)
	case r.Mask != "" && r.Outpaint != nil:
		return apierr.Invalid("outpaint", "give mask or outpaint, not both")
	case !edit && (r.MaskBlur != nil || r.InpaintFill != ""):
		return apierr.Invalid("mask_blur", "mask_blur and inpaint_fill apply only with mask or outpaint")
	case (r.InpaintFullRes || r.InpaintFullResPadding != nil) && r.Mask == "":
		return apierr.Invalid("inpaint_full_res", "inpaint_full_res and its padding apply only with mask")
	case r.InpaintFullResPadding != nil && !r.InpaintFullRes:
		return apierr.Invalid("inpaint_full_res_padding", "inpaint_full_res_padding applies only with inpaint_full_res")
	case r.InpaintFullResPadding != nil && (*r.InpaintFullResPadding < 0 || *r.InpaintFullResPadding > MaxFullResPadding):
		return apierr.Invalid("inpaint_full_res_padding", "inpaint_full_res_padding must be from 0 to %d", MaxFullResPadding)
	case !inpaintFills[r.InpaintFill]:
		return apierr.Invalid("inpaint_fill", "inpaint_fill must be original, latent_noise or latent_nothing")
	case !edit:
		return nil
	}
	params.MaskBlur = DefaultMaskBlur
	if r.MaskBlur != nil {
		if *r.MaskBlur < 0 || *r.MaskBlur > MaxMaskBlur {
			return apierr.Invalid("mask_blur", "mask_blur must be from 0 to %d", MaxMaskBlur)
		}
		params.MaskBlur = *r.MaskBlur
	}
	params.InpaintFill = r.InpaintFill
	if r.InpaintFullRes {
		params.InpaintFullRes, params.InpaintFullResPadding = true, DefaultFullResPadding
		if r.InpaintFullResPadding != nil {
			params.InpaintFullResPadding = *r.InpaintFullResPadding
		}
	}
	if o := r.Outpaint; o != nil {
		if o.Left < 0 || o.Right < 0 || o.Top < 0 || o.Bottom < 0 || o.Left > MaxSide || o.Right > MaxSide || o.Top > MaxSide || o.Bottom > MaxSide {
			return apierr.Invalid("outpaint", "outpaint sides must be from 0 to %d pixels", MaxSide)
		}
		if *o == (jobs.Outpaint{}) {
			return apierr.Invalid("outpaint", "outpaint extends no side")
		}
		oc := *o
		params.Outpaint = &oc
	}
	return nil
}
