package pipeline

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
)

// Outpaint extends an init image's canvas by a number of pixels on each
// side. The new border starts from an edge-aware fill (each pixel repeats
// the nearest edge pixel of the image, fading towards the edge's mean
// colour with distance) and is repainted through a generated mask that
// also covers OutpaintOverlap pixels of the image along each extended
// side, so the seam is redrawn; the rest of the image comes back unchanged.
type Outpaint struct {
	Left, Right, Top, Bottom int
}

// OutpaintOverlap is how far, in pixels, the generated mask reaches into
// the original image along an extended side.
const OutpaintOverlap = 8

func (o Outpaint) zero() bool { return o == Outpaint{} }

// expandCanvas applies the edit defaults to a request before its size is
// resolved: an inpainting or outpainting request gets strength 1 unless it
// sets one, and an outpainting request's init image and mask become the
// extended canvas and its generated mask.
func expandCanvas(req Request, f int) (Request, error) {
	e := req.Edit
	if !e.on() {
		return req, nil
	}
	if req.Strength == 0 {
		req.Strength = 1
	}
	if e.Outpaint.zero() {
		return req, nil
	}
	o := e.Outpaint
	switch {
	case o.Left < 0 || o.Right < 0 || o.Top < 0 || o.Bottom < 0:
		return req, fmt.Errorf("pipeline: outpaint extensions %+v must not be negative", o)
	case e.Mask != nil:
		return req, errors.New("pipeline: give a mask or outpaint extensions, not both")
	case req.InitImage == nil:
		return req, errors.New("pipeline: outpainting needs an init image (not init pixels)")
	}
	b := req.InitImage.Bounds()
	w, h := b.Dx()+o.Left+o.Right, b.Dy()+o.Top+o.Bottom
	switch {
	case b.Dx() <= 0 || b.Dy() <= 0:
		return req, errors.New("pipeline: init image is empty")
	case w > MaxSide || h > MaxSide:
		return req, fmt.Errorf("pipeline: outpainted canvas %dx%d exceeds %d", w, h, MaxSide)
	case w%f != 0 || h%f != 0:
		return req, fmt.Errorf("pipeline: outpainted canvas %dx%d is not divisible by the VAE factor %d; adjust the extensions", w, h, f)
	case (req.Width != 0 || req.Height != 0) && (req.Width != w || req.Height != h):
		return req, fmt.Errorf("pipeline: size %dx%d differs from the outpainted canvas %dx%d (leave it unset)", req.Width, req.Height, w, h)
	}
	req.InitImage = extendCanvas(req.InitImage, o)
	req.Width, req.Height = w, h
	mask := image.NewGray(image.Rect(0, 0, w, h))
	inner := image.Rect(o.Left, o.Top, o.Left+b.Dx(), o.Top+b.Dy())
	keep := inner
	if o.Left > 0 {
		keep.Min.X += OutpaintOverlap
	}
	if o.Right > 0 {
		keep.Max.X -= OutpaintOverlap
	}
	if o.Top > 0 {
		keep.Min.Y += OutpaintOverlap
	}
	if o.Bottom > 0 {
		keep.Max.Y -= OutpaintOverlap
	}
	draw.Draw(mask, mask.Bounds(), image.NewUniform(color.Gray{Y: 255}), image.Point{}, draw.Src)
	if !keep.Empty() {
		draw.Draw(mask, keep, image.NewUniform(color.Gray{}), image.Point{}, draw.Src)
	}
	req.Edit.Mask = mask
	req.Edit.Outpaint = Outpaint{}
	return req, nil
}

// extendCanvas returns im on a canvas grown by o, the border filled
// edge-aware: each new pixel takes the nearest edge pixel of im, mixed
// towards the mean colour of im's border by its distance from the image
// over the extension's size.
func extendCanvas(im image.Image, o Outpaint) *image.RGBA {
	b := im.Bounds()
	sw, sh := b.Dx(), b.Dy()
	w, h := sw+o.Left+o.Right, sh+o.Top+o.Bottom
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	src := image.NewRGBA(image.Rect(0, 0, sw, sh))
	draw.Draw(src, src.Bounds(), im, b.Min, draw.Src)
	var mean [3]float64
	count := 0
	for y := 0; y < sh; y++ {
		for x := 0; x < sw; x++ {
			if x != 0 && y != 0 && x != sw-1 && y != sh-1 {
				continue
			}
			p := src.Pix[y*src.Stride+4*x:]
			for c := 0; c < 3; c++ {
				mean[c] += float64(p[c])
			}
			count++
		}
	}
	for c := range mean {
		mean[c] /= float64(count)
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			sx, sy := x-o.Left, y-o.Top
			cx, cy := min(max(sx, 0), sw-1), min(max(sy, 0), sh-1)
			p := src.Pix[cy*src.Stride+4*cx:]
			q := out.Pix[y*out.Stride+4*x:]
			if sx == cx && sy == cy {
				copy(q[:4], p[:4])
				continue
			}
			// the fraction of the way across the extension, the larger
			// of the horizontal and vertical ones
			t := 0.0
			if sx < 0 {
				t = max(t, float64(-sx)/float64(o.Left))
			} else if sx >= sw {
				t = max(t, float64(sx-sw+1)/float64(o.Right))
			}
			if sy < 0 {
				t = max(t, float64(-sy)/float64(o.Top))
			} else if sy >= sh {
				t = max(t, float64(sy-sh+1)/float64(o.Bottom))
			}
			for c := 0; c < 3; c++ {
				q[c] = uint8((1-t)*float64(p[c]) + t*mean[c] + 0.5)
			}
			q[3] = 255
		}
	}
	return out
}
