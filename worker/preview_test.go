package worker

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"testing"
)

func TestPreviewSizes(t *testing.T) {
	for _, c := range []struct {
		w, h, maxSide, tw, th int
	}{
		{16, 16, 128, 64, 64},    // a 128-px image's latent preview grows to 64
		{16, 8, 128, 64, 32},     // keeping its aspect
		{64, 64, 128, 64, 64},    // already large enough
		{256, 128, 128, 128, 64}, // shrunk to the configured size
		{16, 16, 32, 32, 32},     // never beyond the configured size
	} {
		img := image.NewRGBA(image.Rect(0, 0, c.w, c.h))
		for i := range img.Pix {
			img.Pix[i] = uint8(i * 7)
		}
		data, tw, th, err := previewJPEG(img, c.maxSide, 80)
		if err != nil || tw != c.tw || th != c.th {
			t.Fatalf("%dx%d max %d: %dx%d, %v; want %dx%d", c.w, c.h, c.maxSide, tw, th, err, c.tw, c.th)
		}
		dec, err := jpeg.Decode(bytes.NewReader(data))
		if err != nil || dec.Bounds().Dx() != tw || dec.Bounds().Dy() != th {
			t.Fatalf("jpeg: %v", err)
		}
	}
}

func TestBilinearKeepsFlatColour(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 4, 4))
	for y := 0; y < 4; y++ {
		for x := 0; x < 4; x++ {
			img.SetRGBA(x, y, color.RGBA{10, 200, 90, 255})
		}
	}
	out := bilinear(img, 16, 16)
	for i := 0; i < len(out.Pix); i += 4 {
		if out.Pix[i] != 10 || out.Pix[i+1] != 200 || out.Pix[i+2] != 90 {
			t.Fatalf("pixel %d: %v", i/4, out.Pix[i:i+4])
		}
	}
	// A left-to-right edge interpolates monotonically.
	for y := 0; y < 4; y++ {
		for x := 0; x < 4; x++ {
			img.SetRGBA(x, y, color.RGBA{uint8(x * 80), 0, 0, 255})
		}
	}
	out = bilinear(img, 16, 4)
	for x := 1; x < 16; x++ {
		if out.Pix[x*4] < out.Pix[(x-1)*4] {
			t.Fatalf("not monotonic at %d: %v", x, out.Pix[:64])
		}
	}
}
