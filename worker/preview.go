package worker

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
)

// MinPreviewSide is the longest side previews are enlarged to when the
// sampler's preview (one pixel per latent position) is smaller, so that
// they show something recognisable.
const MinPreviewSide = 64

// previewJPEG scales img so that its longest side is at most maxSide
// (averaging boxes of pixels) and at least MinPreviewSide when maxSide
// allows (interpolating bilinearly), and encodes it as JPEG.
func previewJPEG(img image.Image, maxSide, quality int) ([]byte, int, int, error) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= 0 || h <= 0 {
		return nil, 0, 0, errEmptyImage
	}
	long := max(w, h)
	target := long
	switch {
	case long > maxSide:
		target = maxSide
	case long < MinPreviewSide:
		target = min(MinPreviewSide, maxSide)
	}
	tw, th := w, h
	if target != long {
		if w >= h {
			tw, th = target, max(1, h*target/w)
		} else {
			tw, th = max(1, w*target/h), target
		}
	}
	var dst *image.RGBA
	if tw > w || th > h {
		dst = bilinear(img, tw, th)
	} else {
		dst = boxDown(img, tw, th)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, dst, &jpeg.Options{Quality: quality}); err != nil {
		return nil, 0, 0, err
	}
	return buf.Bytes(), tw, th, nil
}

// boxDown shrinks img to tw×th by averaging boxes of pixels.
func boxDown(img image.Image, tw, th int) *image.RGBA {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	dst := image.NewRGBA(image.Rect(0, 0, tw, th))
	for y := 0; y < th; y++ {
		y0, y1 := y*h/th, max((y+1)*h/th, y*h/th+1)
		for x := 0; x < tw; x++ {
			x0, x1 := x*w/tw, max((x+1)*w/tw, x*w/tw+1)
			var r, g, bl, n uint32
			for sy := y0; sy < y1; sy++ {
				for sx := x0; sx < x1; sx++ {
					cr, cg, cb, _ := img.At(b.Min.X+sx, b.Min.Y+sy).RGBA()
					r, g, bl, n = r+cr, g+cg, bl+cb, n+1
				}
			}
			dst.SetRGBA(x, y, color.RGBA{uint8(r / n >> 8), uint8(g / n >> 8), uint8(bl / n >> 8), 255})
		}
	}
	return dst
}

// bilinear enlarges img to tw×th, sampling pixel centres bilinearly.
func bilinear(img image.Image, tw, th int) *image.RGBA {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	at := func(x, y int) [3]float64 {
		x, y = min(max(x, 0), w-1), min(max(y, 0), h-1)
		r, g, bl, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
		return [3]float64{float64(r >> 8), float64(g >> 8), float64(bl >> 8)}
	}
	dst := image.NewRGBA(image.Rect(0, 0, tw, th))
	for y := 0; y < th; y++ {
		fy := (float64(y)+0.5)*float64(h)/float64(th) - 0.5
		y0 := int(fy)
		if fy < 0 {
			y0 = -1
		}
		ty := fy - float64(y0)
		for x := 0; x < tw; x++ {
			fx := (float64(x)+0.5)*float64(w)/float64(tw) - 0.5
			x0 := int(fx)
			if fx < 0 {
				x0 = -1
			}
			tx := fx - float64(x0)
			a, bb, c, d := at(x0, y0), at(x0+1, y0), at(x0, y0+1), at(x0+1, y0+1)
			var px [3]uint8
			for k := 0; k < 3; k++ {
				top := a[k]*(1-tx) + bb[k]*tx
				bot := c[k]*(1-tx) + d[k]*tx
				px[k] = uint8(min(max(top*(1-ty)+bot*ty+0.5, 0), 255))
			}
			dst.SetRGBA(x, y, color.RGBA{px[0], px[1], px[2], 255})
		}
	}
	return dst
}
