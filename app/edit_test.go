package app_test

import (
	"bytes"
	"encoding/base64"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"testing"
)

func pngBase64(t *testing.T, im image.Image) string {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, im); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

// TestInpaintOutpaintVariationAPI runs the native API's editing fields end
// to end on the built-in model: pixels outside an inpainting mask come
// back unchanged, outpainting grows the canvas, and variation seeds are
// recorded; bad edit fields are 400s naming the field.
func TestInpaintOutpaintVariationAPI(t *testing.T) {
	s := startServer(t, nil)
	src := image.NewRGBA(image.Rect(0, 0, 64, 64))
	mask := image.NewGray(image.Rect(0, 0, 64, 64))
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			src.SetRGBA(x, y, color.RGBA{uint8(4 * x), uint8(4 * y), 120, 255})
			if x >= 24 && x < 40 && y >= 24 && y < 40 {
				mask.SetGray(x, y, color.Gray{Y: 255})
			}
		}
	}
	fetch := func(done map[string]any) image.Image {
		t.Helper()
		if done["status"] != "succeeded" {
			t.Fatalf("job: %v", done)
		}
		url := done["images"].([]any)[0].(map[string]any)["url"].(string)
		r := s.do("GET", url, "", nil)
		if r.status != http.StatusOK {
			t.Fatalf("image: %d", r.status)
		}
		im, err := png.Decode(bytes.NewReader(r.body))
		if err != nil {
			t.Fatal(err)
		}
		return im
	}
	id := s.submit("", map[string]any{"prompt": "a circle", "steps": 3, "strength": 1, "init_image": pngBase64(t, src),
		"mask": "data:image/png;base64," + pngBase64(t, mask), "mask_blur": 2, "inpaint_fill": "original"})
	done := s.waitJob("", id, "succeeded", "failed")
	im := fetch(done)
	reach := image.Rect(24, 24, 40, 40).Inset(-5)
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			if (image.Point{x, y}).In(reach) {
				continue
			}
			r, g, b, _ := im.At(x, y).RGBA()
			w := src.RGBAAt(x, y)
			if uint8(r>>8) != w.R || uint8(g>>8) != w.G || uint8(b>>8) != w.B {
				t.Fatalf("pixel (%d,%d) outside the mask changed", x, y)
			}
		}
	}
	p := done["params"].(map[string]any)
	if p["mask_blur"].(float64) != 2 || p["inpaint_fill"] != "original" {
		t.Fatalf("params %v", p)
	}

	// only the masked region, at 64×64, pasted into the whole image
	id = s.submit("", map[string]any{"prompt": "a circle", "steps": 3, "strength": 1, "init_image": pngBase64(t, src),
		"mask": pngBase64(t, mask), "mask_blur": 2, "inpaint_full_res": true, "inpaint_full_res_padding": 4})
	done = s.waitJob("", id, "succeeded", "failed")
	im = fetch(done)
	changed := 0
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			r, g, b, _ := im.At(x, y).RGBA()
			w := src.RGBAAt(x, y)
			same := uint8(r>>8) == w.R && uint8(g>>8) == w.G && uint8(b>>8) == w.B
			if !(image.Point{x, y}).In(reach) && !same {
				t.Fatalf("full res: pixel (%d,%d) outside the mask changed", x, y)
			}
			if (image.Point{x, y}).In(image.Rect(24, 24, 40, 40)) && !same {
				changed++
			}
		}
	}
	if changed < 16*16/2 || done["params"].(map[string]any)["inpaint_full_res_padding"].(float64) != 4 {
		t.Fatalf("full res: %d masked pixels repainted, params %v", changed, done["params"])
	}

	id = s.submit("", map[string]any{"prompt": "a circle", "steps": 3, "init_image": pngBase64(t, src),
		"outpaint": map[string]any{"left": 16, "bottom": 8}, "subseed": 5, "subseed_strength": 0.5})
	im = fetch(s.waitJob("", id, "succeeded", "failed"))
	if b := im.Bounds(); b.Dx() != 80 || b.Dy() != 72 {
		t.Fatalf("outpainted canvas %v, want 80×72", b)
	}

	for name, c := range map[string]struct {
		body  map[string]any
		field string
	}{
		"mask without init": {map[string]any{"prompt": "x", "mask": pngBase64(t, mask)}, "mask"},
		"mask not an image": {map[string]any{"prompt": "x", "init_image": pngBase64(t, src), "mask": "aGVsbG8="}, "mask"},
		"odd canvas":        {map[string]any{"prompt": "x", "init_image": pngBase64(t, src), "outpaint": map[string]any{"left": 3}}, "outpaint"},
		"outpaint sized":    {map[string]any{"prompt": "x", "init_image": pngBase64(t, src), "width": 64, "height": 64, "outpaint": map[string]any{"left": 8}}, "outpaint"},
		"bad fill":          {map[string]any{"prompt": "x", "init_image": pngBase64(t, src), "mask": pngBase64(t, mask), "inpaint_fill": "x"}, "inpaint_fill"},
		"bad strength":      {map[string]any{"prompt": "x", "subseed_strength": 3}, "subseed_strength"},
	} {
		r := s.do("POST", "/v1/jobs", "", c.body)
		if code, f := r.errField(t); r.status != 400 || f != c.field {
			t.Errorf("%s: %d %s %s", name, r.status, code, f)
		}
	}
}
