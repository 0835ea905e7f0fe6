package sdengine

import (
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/worker"
)

// withEdit sets a pipeline request's variation, edit and hires fields from
// the worker request's.
func withEdit(req worker.Request, out pipeline.Request) pipeline.Request {
	e := req.Edit
	out.Variation = pipeline.Variation{Subseed: e.Subseed, Strength: e.SubseedStrength}
	if h := req.Hires; h != nil {
		out.Hires = pipeline.Hires{Scale: h.Scale, Width: h.Width, Height: h.Height, Upscaler: h.Upscaler, Steps: h.Steps, Denoise: h.Denoise}
	}
	if e.Mask != nil || e.Outpaint != [4]int{} {
		out.Edit = pipeline.Edit{Mask: e.Mask, MaskBlur: e.MaskBlur, Fill: e.InpaintFill, FullRes: e.FullRes, FullResPadding: e.FullResPadding,
			Outpaint: pipeline.Outpaint{Left: e.Outpaint[0], Right: e.Outpaint[1], Top: e.Outpaint[2], Bottom: e.Outpaint[3]}}
	}
	return out
}
