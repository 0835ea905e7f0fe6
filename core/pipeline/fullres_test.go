package pipeline

import (
	"image"
	"testing"
)

// TestInpaintFullRes inpaints a small masked region of a 100×70 image (not
// a size the model could take whole) at 64×64 and checks the result: the
// whole image's size, unchanged pixels outside the blurred mask, and a
// repainted masked region.
func TestInpaintFullRes(t *testing.T) {
	e := loadEnv(t)
	init := testImage(100, 70)
	hole := image.Rect(60, 20, 72, 30)
	req := editRequest(8)
	req.InitImage = init
	req.Edit = Edit{Mask: centreMask(100, 70, hole), MaskBlur: 1, FullRes: true, FullResPadding: 6}
	res := generate(t, e.pipe, req)
	out := res.Images[0]
	if b := out.Bounds(); b.Dx() != 100 || b.Dy() != 70 {
		t.Fatalf("result %v, want the whole 100×70 image", b)
	}
	if res.LatentShape[2]*e.pipe.Factor() != 64 || res.LatentShape[3]*e.pipe.Factor() != 64 {
		t.Fatalf("latents %v: not inpainted at 64×64", res.LatentShape)
	}
	reach := hole.Inset(-3) // blur radius int(2.5+0.5) = 3
	changed := 0
	for y := 0; y < 70; y++ {
		for x := 0; x < 100; x++ {
			got, want := out.RGBAAt(x, y), init.RGBAAt(x, y)
			if !(image.Point{x, y}.In(reach)) && got != want {
				t.Fatalf("pixel (%d,%d) outside the mask is %v, input %v", x, y, got, want)
			}
			if (image.Point{x, y}.In(hole)) && got != want {
				changed++
			}
		}
	}
	if changed < hole.Dx()*hole.Dy()/2 {
		t.Fatalf("only %d of %d masked pixels repainted", changed, hole.Dx()*hole.Dy())
	}
	bad := req
	bad.Edit = Edit{Mask: centreMask(100, 70, image.Rectangle{}), FullRes: true}
	if _, err := e.pipe.Generate(t.Context(), bad, nil); err == nil {
		t.Fatal("an empty mask was accepted")
	}
	bad.Edit = Edit{FullRes: true}
	if _, err := e.pipe.Generate(t.Context(), bad, nil); err == nil {
		t.Fatal("full-res without a mask was accepted")
	}
}

// TestExpandToAspect checks the crop region's growth to the processing
// size's aspect ratio, centred and kept inside the image.
func TestExpandToAspect(t *testing.T) {
	cases := []struct {
		r      image.Rectangle
		pw, ph int
		w, h   int
		want   image.Rectangle
	}{
		{image.Rect(30, 30, 40, 50), 64, 64, 100, 100, image.Rect(25, 30, 45, 50)},
		{image.Rect(0, 10, 10, 20), 128, 64, 100, 100, image.Rect(0, 10, 20, 20)},
		{image.Rect(90, 0, 100, 40), 64, 64, 100, 100, image.Rect(60, 0, 100, 40)},
		{image.Rect(0, 0, 10, 50), 64, 64, 20, 60, image.Rect(0, 0, 20, 50)},
	}
	for _, c := range cases {
		if got := expandToAspect(c.r, c.pw, c.ph, c.w, c.h); got != c.want {
			t.Errorf("expandToAspect(%v, %d:%d in %dx%d) = %v, want %v", c.r, c.pw, c.ph, c.w, c.h, got, c.want)
		}
	}
}
