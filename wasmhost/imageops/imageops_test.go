package imageops

import (
	"errors"
	"image"
	"image/color"
	"testing"
)

func filled(t *testing.T, w, h int, c color.NRGBA) *image.NRGBA {
	t.Helper()
	im, err := New(w, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	for p := 0; p < len(im.Pix); p += 4 {
		im.Pix[p], im.Pix[p+1], im.Pix[p+2], im.Pix[p+3] = c.R, c.G, c.B, c.A
	}
	return im
}

func TestResizeConstantStaysConstant(t *testing.T) {
	c := color.NRGBA{10, 200, 77, 255}
	for _, f := range []Filter{Linear, Nearest} {
		for _, sz := range [][4]int{{64, 48, 17, 33}, {17, 33, 64, 48}, {5, 500, 300, 3}, {1, 1, 9, 9}} {
			src := filled(t, sz[0], sz[1], c)
			dst, _ := New(sz[2], sz[3], nil)
			if err := Resize(dst, src, f); err != nil {
				t.Fatal(err)
			}
			for p := 0; p < len(dst.Pix); p += 4 {
				if got := (color.NRGBA{dst.Pix[p], dst.Pix[p+1], dst.Pix[p+2], dst.Pix[p+3]}); got != c {
					t.Fatalf("filter %d %v: pixel %d = %v, want %v", f, sz, p/4, got, c)
				}
			}
		}
	}
}

func TestResizeHalvingAveragesPairs(t *testing.T) {
	// Halving a 4×1 row with the antialiased linear filter: the support
	// widens to 2 source pixels, so the left output blends pixels 0..2.
	src, _ := New(4, 1, nil)
	for i, v := range []uint8{0, 100, 200, 40} {
		src.Pix[4*i], src.Pix[4*i+1], src.Pix[4*i+2], src.Pix[4*i+3] = v, v, v, 255
	}
	dst, _ := New(2, 1, nil)
	if err := Resize(dst, src, Linear); err != nil {
		t.Fatal(err)
	}
	// Output 0: centre 1.0, support 2: taps at j=0 (0.5 away → 0.75),
	// j=1 (0.75), j=2 (1.5 away → 0.25); weights /1.75.
	want := (0*0.75 + 100*0.75 + 200*0.25) / 1.75
	if got := float64(dst.Pix[0]); got < want-0.6 || got > want+0.6 {
		t.Fatalf("left pixel %v, want %.1f", got, want)
	}
}

func TestResizeRespectsAlpha(t *testing.T) {
	// A transparent red pixel beside an opaque blue one must not tint the
	// result red: colour is averaged in premultiplied space.
	src, _ := New(2, 1, nil)
	copy(src.Pix, []byte{255, 0, 0, 0, 0, 0, 255, 255})
	dst, _ := New(1, 1, nil)
	if err := Resize(dst, src, Linear); err != nil {
		t.Fatal(err)
	}
	if dst.Pix[0] != 0 || dst.Pix[2] != 255 {
		t.Fatalf("got %v, want pure blue with partial alpha", dst.Pix)
	}
}

func TestCropAndBounds(t *testing.T) {
	src, _ := New(8, 8, nil)
	for i := range src.Pix {
		src.Pix[i] = uint8(i)
	}
	dst, _ := New(3, 2, nil)
	if err := Crop(dst, src, 4, 5); err != nil {
		t.Fatal(err)
	}
	if dst.Pix[0] != src.Pix[5*32+16] || dst.Pix[4*3] != src.Pix[6*32+16] {
		t.Fatalf("crop copied the wrong pixels")
	}
	if err := Crop(dst, src, 6, 0); !errors.Is(err, ErrBounds) {
		t.Fatalf("crop past the edge: %v", err)
	}
	if err := Crop(dst, src, -1, 0); !errors.Is(err, ErrBounds) {
		t.Fatalf("negative crop: %v", err)
	}
}

func TestDrawTextMarksGlyphPixels(t *testing.T) {
	im := filled(t, 40, 20, color.NRGBA{0, 0, 0, 255})
	white := color.NRGBA{255, 255, 255, 255}
	if err := DrawText(im, 1, 1, "I", 2, 0, white, color.NRGBA{}); err != nil {
		t.Fatal(err)
	}
	// 'I' row 0 is 01110: glyph columns 1..3 lit, scaled by 2 from x=1.
	lit := func(x, y int) bool { return im.Pix[y*im.Stride+4*x] == 255 }
	if lit(1, 1) || !lit(3, 1) || !lit(8, 2) || lit(9, 1) {
		t.Fatalf("glyph pixels wrong")
	}
	// Column 2 of 'I' (centre) is lit on every row.
	for y := 1; y < 1+14; y++ {
		if !lit(5, y) {
			t.Fatalf("stem missing at y=%d", y)
		}
	}
	w, h := TextSize("ab\nc", 3)
	if w != (2*6-1)*3 || h != (2*8-1)*3 {
		t.Fatalf("TextSize = %d×%d", w, h)
	}
	if err := DrawText(im, 0, 0, "x", 0, 0, white, white); err == nil {
		t.Fatal("scale 0 accepted")
	}
	// Clipped text far outside does not panic.
	if err := DrawText(im, -1000, 1000, "clipped", 4, 3, white, white); err != nil {
		t.Fatal(err)
	}
}

func TestGrayscaleAndOverlay(t *testing.T) {
	im := filled(t, 2, 2, color.NRGBA{255, 0, 0, 255})
	m := Grayscale(1)
	if err := ApplyColorMatrix(im, &m); err != nil {
		t.Fatal(err)
	}
	if im.Pix[0] != 54 || im.Pix[1] != 54 || im.Pix[2] != 54 || im.Pix[3] != 255 {
		t.Fatalf("grey of red = %v, want 54 (0.2126·255)", im.Pix[:4])
	}
	id := Identity()
	before := append([]byte(nil), im.Pix...)
	_ = ApplyColorMatrix(im, &id)
	if string(before) != string(im.Pix) {
		t.Fatal("identity changed pixels")
	}
	top := filled(t, 1, 1, color.NRGBA{0, 0, 255, 255})
	if err := Overlay(im, top, 1, 1, 0.5); err != nil {
		t.Fatal(err)
	}
	p := im.Pix[1*im.Stride+4:]
	if p[0] != 27 || p[2] != 155 || p[3] != 255 {
		t.Fatalf("half overlay = %v", p[:4])
	}
}
