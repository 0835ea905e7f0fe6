package pipeline

import (
	"errors"
	"fmt"
	"image"
	"image/draw"
	"math"
)

// MaxFullResPadding bounds Edit.FullResPadding.
const MaxFullResPadding = 1024

// fullRes is the state of an inpaint_full_res request: the whole init
// image, its blurred mask at full size, and the region of it that was
// inpainted at the request's size.
type fullRes struct {
	w, h  int       // the whole image's size
	init  []float32 // (3, h, w) in [0, 1]
	alpha []float32 // (h, w) blurred mask
	crop  image.Rectangle
}

// cropToMask turns an inpaint_full_res request into an inpainting of the
// region around its mask: the mask's bounding box grown by FullResPadding
// pixels and then to the processing size's aspect ratio, cropped from the
// init image and the mask and inpainted at that size (req.Width×Height,
// else the model's native size); paste scales the result back and lays it
// over the whole image through the blurred mask (AUTOMATIC1111's "inpaint
// at full resolution" / "only masked").
func cropToMask(req Request, nativeW, nativeH int) (Request, error) {
	e := req.Edit
	switch {
	case e.FullResPadding < 0 || e.FullResPadding > MaxFullResPadding:
		return req, fmt.Errorf("pipeline: full-resolution padding %d must be in 0..%d", e.FullResPadding, MaxFullResPadding)
	case !e.FullRes && e.FullResPadding != 0:
		return req, errors.New("pipeline: padding applies to full-resolution inpainting only")
	case !e.FullRes:
		return req, nil
	case e.Mask == nil || req.InitImage == nil:
		return req, errors.New("pipeline: full-resolution inpainting needs a mask and an init image")
	}
	b := req.InitImage.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= 0 || h <= 0 || w > MaxSide || h > MaxSide {
		return req, fmt.Errorf("pipeline: init image %dx%d must have sides 1..%d", w, h, MaxSide)
	}
	raw := maskAlpha(e.Mask, w, h)
	fr := &fullRes{w: w, h: h, init: imageToPixels(req.InitImage, w, h), alpha: append([]float32(nil), raw...)}
	blurMask(fr.alpha, w, h, e.MaskBlur)
	box := image.Rectangle{}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if fr.alpha[y*w+x] > 0 {
				box = box.Union(image.Rect(x, y, x+1, y+1))
			}
		}
	}
	if box.Empty() {
		return req, errors.New("pipeline: the mask repaints nothing")
	}
	pw, ph := req.Width, req.Height
	if pw == 0 || ph == 0 {
		pw, ph = nativeW, nativeH
	}
	fr.crop = expandToAspect(box.Inset(-e.FullResPadding).Intersect(image.Rect(0, 0, w, h)), pw, ph, w, h)
	crop := image.NewRGBA(image.Rect(0, 0, fr.crop.Dx(), fr.crop.Dy()))
	draw.Draw(crop, crop.Bounds(), req.InitImage, b.Min.Add(fr.crop.Min), draw.Src)
	mask := image.NewGray(crop.Bounds())
	for y := 0; y < fr.crop.Dy(); y++ {
		for x := 0; x < fr.crop.Dx(); x++ {
			mask.Pix[y*mask.Stride+x] = to8(raw[(fr.crop.Min.Y+y)*w+fr.crop.Min.X+x])
		}
	}
	req.InitImage, req.Width, req.Height = crop, pw, ph
	req.Edit.Mask, req.Edit.FullRes, req.Edit.FullResPadding = mask, false, 0
	req.Edit.full = fr
	return req, nil
}

// expandToAspect grows r (within a w×h image) along its shorter side to
// the aspect ratio pw:ph, centred and shifted to stay inside the image,
// as far as the image allows.
func expandToAspect(r image.Rectangle, pw, ph, w, h int) image.Rectangle {
	grow := func(lo, hi, want, limit int) (int, int) {
		want = min(want, limit)
		d := want - (hi - lo)
		if d <= 0 {
			return lo, hi
		}
		lo -= d / 2
		hi += d - d/2
		if lo < 0 {
			hi, lo = hi-lo, 0
		}
		if hi > limit {
			lo, hi = max(lo-(hi-limit), 0), limit
		}
		return lo, hi
	}
	if r.Dx()*ph < r.Dy()*pw { // too narrow
		r.Min.X, r.Max.X = grow(r.Min.X, r.Max.X, (r.Dy()*pw+ph-1)/ph, w)
	} else {
		r.Min.Y, r.Max.Y = grow(r.Min.Y, r.Max.Y, (r.Dx()*ph+pw-1)/pw, h)
	}
	return r
}

// paste scales the inpainted images (n, 3, ph, pw) back to the crop's size
// and lays them over the whole image through the blurred mask; the result
// replaces the pixels.
func (fr *fullRes) paste(res *Result) {
	n, ph, pw := res.PixelShape[0], res.PixelShape[2], res.PixelShape[3]
	cw, ch := fr.crop.Dx(), fr.crop.Dy()
	plane := fr.w * fr.h
	out := make([]float32, 0, n*3*plane)
	for i := 0; i < n; i++ {
		img := append([]float32(nil), fr.init...)
		small := resizePlanes(res.Pixels[i*3*ph*pw:(i+1)*3*ph*pw], 3, ph, pw, ch, cw)
		for c := 0; c < 3; c++ {
			for y := 0; y < ch; y++ {
				for x := 0; x < cw; x++ {
					k := (fr.crop.Min.Y+y)*fr.w + fr.crop.Min.X + x
					a := fr.alpha[k]
					if a <= 0 {
						continue
					}
					img[c*plane+k] = (1-a)*fr.init[c*plane+k] + a*small[(c*ch+y)*cw+x]
				}
			}
		}
		out = append(out, img...)
	}
	res.Pixels, res.PixelShape = out, [4]int{n, 3, fr.h, fr.w}
}

// resizePlanes resizes (c, sh, sw) planes to (c, dh, dw) bilinearly, with
// imageToPixels' pixel-centre convention.
func resizePlanes(px []float32, c, sh, sw, dh, dw int) []float32 {
	ya, yb, wy := resizeAxis(sh, dh)
	xa, xb, wx := resizeAxis(sw, dw)
	out := make([]float32, c*dh*dw)
	for k := 0; k < c; k++ {
		p := px[k*sh*sw:]
		for y := 0; y < dh; y++ {
			for x := 0; x < dw; x++ {
				top := p[ya[y]*sw+xa[x]]*(1-wx[x]) + p[ya[y]*sw+xb[x]]*wx[x]
				bot := p[yb[y]*sw+xa[x]]*(1-wx[x]) + p[yb[y]*sw+xb[x]]*wx[x]
				out[(k*dh+y)*dw+x] = top*(1-wy[y]) + bot*wy[y]
			}
		}
	}
	return out
}

// resizeAxis gives, for each of d output positions along an axis of s
// input pixels, the two input pixels it mixes and the second one's weight.
func resizeAxis(s, d int) (lo, hi []int, w []float32) {
	lo, hi, w = make([]int, d), make([]int, d), make([]float32, d)
	for i := range d {
		f := (float64(i)+0.5)*float64(s)/float64(d) - 0.5
		i0 := int(math.Floor(f))
		w[i] = float32(f - float64(i0))
		lo[i], hi[i] = min(max(i0, 0), s-1), min(max(i0+1, 0), s-1)
	}
	return lo, hi, w
}
