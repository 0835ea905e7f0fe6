package a1111

import (
	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/validate"
)

// edit is the variation-seed and inpainting part of a GenerationRequest,
// with AUTOMATIC1111's names and defaults.
type edit struct {
	Subseed               *int64   `json:"subseed"`
	SubseedStrength       *float64 `json:"subseed_strength"`
	Mask                  *string  `json:"mask"`
	MaskBlur              *int     `json:"mask_blur"`
	InpaintingFill        *int     `json:"inpainting_fill"`
	InpaintFullRes        *bool    `json:"inpaint_full_res"`
	InpaintFullResPadding *int     `json:"inpaint_full_res_padding"`
}

// fills maps A1111's inpainting_fill to Kiln's masked-content modes: 0
// ("fill") has no equivalent and gets Kiln's default (diffusers' way).
var fills = map[int]string{0: "", 1: "original", 2: "latent_noise", 3: "latent_nothing"}

// apply sets a native job request's edit fields from e.
func (e *edit) apply(jr *validate.JobRequest, img2img bool) *apierr.Error {
	if e.SubseedStrength != nil && *e.SubseedStrength != 0 {
		jr.SubseedStrength = e.SubseedStrength
		if e.Subseed != nil && *e.Subseed != -1 {
			if *e.Subseed < 0 {
				return apierr.Invalid("subseed", "subseed must be -1 (random) or from 0 to %d", uint64(validate.MaxSeed))
			}
			s := uint64(*e.Subseed)
			jr.Subseed = &s
		}
	}
	if !img2img || e.Mask == nil || *e.Mask == "" {
		if e.MaskBlur != nil && *e.MaskBlur != 4 {
			return apierr.Invalid("mask_blur", "mask_blur applies only with a mask")
		}
		if e.InpaintingFill != nil && *e.InpaintingFill != 0 && *e.InpaintingFill != 1 {
			return apierr.Invalid("inpainting_fill", "inpainting_fill applies only with a mask")
		}
		return nil
	}
	jr.Mask = *e.Mask
	jr.MaskBlur = e.MaskBlur
	if e.InpaintingFill != nil {
		f, ok := fills[*e.InpaintingFill]
		if !ok {
			return apierr.Invalid("inpainting_fill", "inpainting_fill must be 0 (fill), 1 (original), 2 (latent noise) or 3 (latent nothing)")
		}
		jr.InpaintFill = f
	}
	// A1111 inpaints "only masked" unless told otherwise, with no padding.
	jr.InpaintFullRes = e.InpaintFullRes == nil || *e.InpaintFullRes
	if jr.InpaintFullRes {
		pad := 0
		if e.InpaintFullResPadding != nil {
			pad = *e.InpaintFullResPadding
		}
		jr.InpaintFullResPadding = &pad
	}
	return nil
}
