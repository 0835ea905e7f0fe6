package api

import (
	"context"
	"strings"

	"github.com/kiln-project/kiln/core/imagedecode"
	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/validate"
)

// editInputs decodes an inpainting request's mask and sizes an
// outpainting request's canvas: the init image (init, whose size the
// request left unset when sizeUnset) grown by the outpaint sides, which
// must divide by 8. Other checks of the edit fields are the validator's.
func (s *Server) editInputs(ctx context.Context, r *validate.JobRequest, init imagedecode.Info, sizeUnset bool) ([]byte, *apierr.Error) {
	if r.InitImage == "" {
		return nil, nil // the validator names what is missing
	}
	if o := r.Outpaint; o != nil && r.Mask == "" && o.Left >= 0 && o.Right >= 0 && o.Top >= 0 && o.Bottom >= 0 {
		w, h := init.Width+o.Left+o.Right, init.Height+o.Top+o.Bottom
		switch {
		case w%8 != 0 || h%8 != 0:
			return nil, apierr.Invalid("outpaint", "the outpainted canvas %dx%d (init image %dx%d) must have sides divisible by 8; adjust the sides", w, h, init.Width, init.Height)
		case !sizeUnset && (r.Width == nil || r.Height == nil || *r.Width != w || *r.Height != h):
			return nil, apierr.Invalid("outpaint", "width and height must be left out with outpaint (the canvas is %dx%d)", w, h)
		}
		r.Width, r.Height = &w, &h
	}
	if r.Mask == "" {
		return nil, nil
	}
	data, _, aerr := decodeInitImage(ctx, r.Mask, s.initImageLimits(), s.decodes)
	if aerr != nil {
		e := *aerr
		e.Field = "mask"
		e.Message = strings.ReplaceAll(e.Message, "init_image", "mask")
		return nil, &e
	}
	return data, nil
}
