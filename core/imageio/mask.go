package imageio

import (
	"image"
	"image/draw"
)

// AlphaMask turns an image's transparency into an inpainting mask (white =
// repaint): each pixel's value is 255 − alpha, so fully transparent pixels
// are repainted and partly transparent ones blend. It reports whether any
// pixel is transparent at all.
func AlphaMask(img image.Image) (*image.Gray, bool) {
	b := img.Bounds()
	out := image.NewGray(image.Rect(0, 0, b.Dx(), b.Dy()))
	transparent := false
	set := func(x, y int, a uint8) {
		v := 255 - a
		out.Pix[y*out.Stride+x] = v
		transparent = transparent || v != 0
	}
	switch m := img.(type) {
	case *image.Gray, *image.Gray16, *image.YCbCr, *image.CMYK:
		return out, false // no alpha channel
	case *image.NRGBA:
		for y := 0; y < b.Dy(); y++ {
			row := m.Pix[y*m.Stride:]
			for x := 0; x < b.Dx(); x++ {
				set(x, y, row[4*x+3])
			}
		}
	case *image.RGBA:
		for y := 0; y < b.Dy(); y++ {
			row := m.Pix[y*m.Stride:]
			for x := 0; x < b.Dx(); x++ {
				set(x, y, row[4*x+3])
			}
		}
	default:
		n := image.NewNRGBA(out.Rect)
		draw.Draw(n, n.Rect, img, b.Min, draw.Src)
		return AlphaMask(n)
	}
	return out, transparent
}
