//go:build !wasip1

package sdk

import (
	"image"
	"image/color"

	"github.com/kiln-project/kiln/wasmhost/imageops"
)

func nrgba(im Image) (*image.NRGBA, error) {
	return imageops.New(int(im.Width), int(im.Height), im.Pix)
}

func unpack(c Color) color.NRGBA {
	return color.NRGBA{uint8(c >> 24), uint8(c >> 16), uint8(c >> 8), uint8(c)}
}

func resize(src, dst Image, f Filter) error {
	s, err := nrgba(src)
	if err != nil {
		return err
	}
	d, err := nrgba(dst)
	if err != nil {
		return err
	}
	return imageops.Resize(d, s, imageops.Filter(f))
}

func crop(src, dst Image, x, y uint32) error {
	s, err := nrgba(src)
	if err != nil {
		return err
	}
	d, err := nrgba(dst)
	if err != nil {
		return err
	}
	return imageops.Crop(d, s, int(x), int(y))
}

func drawText(im Image, x, y int32, text string, scale, pad int32, fg, bg Color) error {
	d, err := nrgba(im)
	if err != nil {
		return err
	}
	return imageops.DrawText(d, int(x), int(y), text, int(scale), int(pad), unpack(fg), unpack(bg))
}

func overlay(dst, src Image, x, y int32, opacity float32) error {
	s, err := nrgba(src)
	if err != nil {
		return err
	}
	d, err := nrgba(dst)
	if err != nil {
		return err
	}
	return imageops.Overlay(d, s, int(x), int(y), opacity)
}

func colorMatrix(im Image, m *[20]float32) error {
	d, err := nrgba(im)
	if err != nil {
		return err
	}
	cm := imageops.ColorMatrix(*m)
	return imageops.ApplyColorMatrix(d, &cm)
}
