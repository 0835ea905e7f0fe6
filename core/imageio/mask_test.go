package imageio

import (
	"image"
	"image/color"
	"testing"
)

func opaqueNRGBA(w, h int) *image.NRGBA {
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range m.Pix {
		m.Pix[i] = 255
	}
	return m
}

func TestAlphaMask(t *testing.T) {
	if _, any := AlphaMask(opaqueNRGBA(4, 4)); any {
		t.Fatal("an opaque image has transparency")
	}
	if _, any := AlphaMask(image.NewGray(image.Rect(0, 0, 4, 4))); any {
		t.Fatal("a gray image has transparency")
	}
	// a palette with a transparent entry, offset bounds
	p := image.NewPaletted(image.Rect(2, 2, 6, 6), color.Palette{color.NRGBA{A: 255}, color.NRGBA{A: 0}})
	p.SetColorIndex(3, 4, 1)
	m, any := AlphaMask(p)
	if !any || m.Bounds() != image.Rect(0, 0, 4, 4) || m.GrayAt(1, 2).Y != 255 || m.GrayAt(0, 0).Y != 0 {
		t.Fatalf("paletted: %v %v %d %d", any, m.Bounds(), m.GrayAt(1, 2).Y, m.GrayAt(0, 0).Y)
	}
}
