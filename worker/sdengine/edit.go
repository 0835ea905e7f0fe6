package sdengine

import (
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/worker"
)

// withEdit sets a pipeline request's variation and edit fields from the
// worker request's.
func withEdit(req worker.Request, out pipeline.Request) pipeline.Request {
	e := req.Edit
	out.Variation = pipeline.Variation{Subseed: e.Subseed, Strength: e.SubseedStrength}
	if e.Mask != nil || e.Outpaint != [4]int{} {
		out.Edit = pipeline.Edit{Mask: e.Mask, MaskBlur: e.MaskBlur, Fill: e.InpaintFill, FullRes: e.FullRes, FullResPadding: e.FullResPadding,
			Outpaint: pipeline.Outpaint{Left: e.Outpaint[0], Right: e.Outpaint[1], Top: e.Outpaint[2], Bottom: e.Outpaint[3]}}
	}
	return out
}
