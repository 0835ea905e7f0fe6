package comfyui

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"

	"github.com/kiln-project/kiln/core/imagedecode"
	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/gateway/validate"
)

// maskVal is a MASK flowing along the graph: how to compute it once the
// images it comes from are read (values in [0, 1], 1 = repaint, as in
// ComfyUI and in Kiln's masks).
type maskVal struct {
	// upload is the LoadImage file it comes from ("" for a SolidMask).
	upload string
	// channel is "alpha" (LoadImage's MASK: 1 − alpha) or the
	// "red"/"green"/"blue" of ImageToMask.
	channel string
	// solid, width and height describe a SolidMask.
	solid         float64
	width, height int
	invert        bool
}

// values returns a mask's values, w×h row-major; images reads a
// LoadImage file.
func (m *maskVal) values(images func(name string) (image.Image, error)) ([]float64, int, int, error) {
	if m.upload == "" {
		out := make([]float64, m.width*m.height)
		v := m.solid
		if m.invert {
			v = 1 - v
		}
		for i := range out {
			out[i] = v
		}
		return out, m.width, m.height, nil
	}
	img, err := images(m.upload)
	if err != nil {
		return nil, 0, 0, err
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	out := make([]float64, w*h)
	if m.channel == "alpha" {
		g, _ := imageio.AlphaMask(img) // 255 − alpha
		for i := range out {
			out[i] = float64(g.Pix[(i/w)*g.Stride+i%w]) / 255
		}
	} else {
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				c := color.NRGBAModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA)
				v := c.R
				switch m.channel {
				case "green":
					v = c.G
				case "blue":
					v = c.B
				}
				out[y*w+x] = float64(v) / 255
			}
		}
	}
	if m.invert {
		for i := range out {
			out[i] = 1 - out[i]
		}
	}
	return out, w, h, nil
}

// resizeMask scales a mask to w×h bilinearly (align_corners false, as
// torch's interpolate, which ComfyUI uses to fit a mask to its image).
func resizeMask(m []float64, mw, mh, w, h int) []float64 {
	if mw == w && mh == h {
		return m
	}
	out := make([]float64, w*h)
	src := func(i, n, dst int) (int, int, float64) {
		f := (float64(i)+0.5)*float64(n)/float64(dst) - 0.5
		f = math.Max(f, 0)
		i0 := min(int(f), n-1)
		return i0, min(i0+1, n-1), f - float64(i0)
	}
	for y := 0; y < h; y++ {
		y0, y1, fy := src(y, mh, h)
		for x := 0; x < w; x++ {
			x0, x1, fx := src(x, mw, w)
			top := m[y0*mw+x0]*(1-fx) + m[y0*mw+x1]*fx
			bot := m[y1*mw+x0]*(1-fx) + m[y1*mw+x1]*fx
			out[y*w+x] = top*(1-fy) + bot*fy
		}
	}
	return out
}

// growMask is VAEEncodeForInpaint's grow_mask_by: the mask rounded, then
// dilated by a g×g box (torch conv2d with ones, padding ceil((g−1)/2),
// clamped to 1 and cropped to the mask's size), so pixel i takes the
// maximum over [i−p, i−p+g−1] on each axis.
func growMask(m []float64, w, h, g int) []float64 {
	round := make([]float64, len(m))
	for i, v := range m {
		round[i] = math.RoundToEven(v)
	}
	if g <= 0 {
		return round
	}
	p := (g) / 2 // ceil((g−1)/2)
	tmp := make([]float64, len(m))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := 0.0
			for k := max(0, x-p); k <= min(w-1, x-p+g-1); k++ {
				v = math.Max(v, round[y*w+k])
			}
			tmp[y*w+x] = v
		}
	}
	out := make([]float64, len(m))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := 0.0
			for k := max(0, y-p); k <= min(h-1, y-p+g-1); k++ {
				v = math.Max(v, tmp[k*w+x])
			}
			out[y*w+x] = v
		}
	}
	return out
}

// maskImage renders mask values as Kiln's mask (white = repaint).
func maskImage(m []float64, w, h int) *image.Gray {
	g := image.NewGray(image.Rect(0, 0, w, h))
	for i, v := range m {
		g.Pix[i] = uint8(math.Round(math.Min(1, math.Max(0, v)) * 255))
	}
	return g
}

// grayFill sets the pixels where the (unrounded) mask rounds to 1 to
// mid-gray, as VAEEncodeForInpaint does before encoding.
func grayFill(img image.Image, m []float64) *image.NRGBA {
	b := img.Bounds()
	out := image.NewNRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			c := color.NRGBAModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA)
			c.A = 255 // ComfyUI's IMAGE has no alpha
			if math.RoundToEven(m[y*b.Dx()+x]) >= 1 {
				c = color.NRGBA{128, 128, 128, 255}
			}
			out.SetNRGBA(x, y, c)
		}
	}
	return out
}

// anyPositive reports whether a mask repaints anything.
func anyPositive(m []float64) bool {
	for _, v := range m {
		if v > 0 {
			return true
		}
	}
	return false
}

// describe names a mask's source for errors.
func (m *maskVal) describe() string {
	switch {
	case m.upload == "":
		return fmt.Sprintf("a SolidMask of %g", m.solid)
	case m.channel == "alpha":
		return fmt.Sprintf("the alpha channel of %s (transparent = repaint)", m.upload)
	}
	return fmt.Sprintf("the %s channel of %s", m.channel, m.upload)
}

// applyInpaint computes a plan's mask from the images it names (init is
// the init image's data, already read) and sets the job's mask and, for
// VAEEncodeForInpaint, its init image with the masked pixels gray.
func (h *Handler) applyInpaint(ctx context.Context, tenant string, pl *plan, jr *validate.JobRequest, init []byte) *compileError {
	in := pl.inpaint
	fail := func(format string, args ...any) *compileError {
		return &compileError{node: in.node, class: "", input: "mask", kind: "value_not_valid", msg: fmt.Sprintf(format, args...)}
	}
	lim := imagedecode.Limits{MaxPixels: int64(h.o.MaxPixels), MaxSide: validate.MaxSide, MaxBytes: 4 * int64(h.o.MaxPixels)}
	decoded := map[string]image.Image{}
	images := func(name string) (image.Image, error) {
		if img, ok := decoded[name]; ok {
			return img, nil
		}
		data := init
		if name != pl.initImage {
			var err error
			if data, err = h.loadImage(ctx, tenant, name); err != nil {
				return nil, err
			}
		}
		img, _, err := imagedecode.Decode(ctx, data, lim, nil)
		if err != nil {
			return nil, fmt.Errorf("image %q: %w", name, err)
		}
		decoded[name] = img
		return img, nil
	}
	img, err := images(pl.initImage)
	if err != nil {
		return fail("%v", err)
	}
	vals, mw, mh, err := in.mask.values(images)
	if err != nil {
		return fail("%v", err)
	}
	w, hgt := img.Bounds().Dx(), img.Bounds().Dy()
	vals = resizeMask(vals, mw, mh, w, hgt)
	mask := vals
	if in.encode {
		mask = growMask(vals, w, hgt, in.grow)
		var buf bytes.Buffer
		if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, grayFill(img, vals)); err != nil {
			return fail("encoding the image: %v", err)
		}
		jr.InitImage = base64.StdEncoding.EncodeToString(buf.Bytes())
	}
	if !anyPositive(mask) {
		return fail("the mask repaints nothing: it is %s", in.mask.describe())
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, maskImage(mask, w, hgt)); err != nil {
		return fail("encoding the mask: %v", err)
	}
	jr.Mask = base64.StdEncoding.EncodeToString(buf.Bytes())
	return nil
}
