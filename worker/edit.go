package worker

import (
	"bytes"
	"fmt"
	"image"
)

// editRequest copies a job's inpainting, outpainting and variation-seed
// parameters into the engine request, reading its stored mask.
func (w *Worker) editRequest(a *active, req *Request) error {
	p := &a.job.Params
	req.Edit = Edit{MaskBlur: p.MaskBlur, InpaintFill: p.InpaintFill, Subseed: p.Subseed, SubseedStrength: p.SubseedStrength,
		FullRes: p.InpaintFullRes, FullResPadding: p.InpaintFullResPadding}
	req.Hires = p.Hires
	if o := p.Outpaint; o != nil {
		req.Edit.Outpaint = [4]int{o.Left, o.Right, o.Top, o.Bottom}
	}
	if p.Mask == "" {
		return nil
	}
	data, err := w.o.Store.GetUpload(a.ctx, a.job.Tenant, p.Mask)
	if err != nil {
		return fmt.Errorf("mask: %w", err)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("mask: %w", err)
	}
	req.Edit.Mask = img
	return nil
}
