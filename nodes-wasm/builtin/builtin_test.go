package builtin

import (
	"strings"
	"testing"

	"github.com/kiln-project/kiln/wasmhost/abi"
)

func pre(node, prompt string, ps ...string) abi.PreOutput {
	in := abi.PreInput{Node: node, Prompt: prompt, NegativePrompt: "blurry", Width: 512, Height: 512, Steps: 20, Guidance: 7.5, Sampler: "euler", Seed: 7}
	for i := 0; i+1 < len(ps); i += 2 {
		in.Params = append(in.Params, abi.Param{Key: ps[i], Value: ps[i+1]})
	}
	return Pre(&in)
}

func TestStyleAppendsPreset(t *testing.T) {
	out := pre("style", "a lighthouse at dusk", "preset", "cinematic", "text", "teal and orange")
	if out.Reject {
		t.Fatal(out.Reason)
	}
	want := "a lighthouse at dusk, cinematic lighting, dramatic shadows, shallow depth of field, film grain, anamorphic, teal and orange"
	if out.Prompt != want || out.NegativePrompt != "blurry, flat lighting, cartoon" {
		t.Fatalf("got %q / %q", out.Prompt, out.NegativePrompt)
	}
	if out.Width != 512 || out.Steps != 20 || out.Seed != 7 || out.Sampler != "euler" || out.Guidance != 7.5 {
		t.Fatalf("style changed other fields: %+v", out)
	}
	if err := abi.ValidatePre(&out); err != nil {
		t.Fatal(err)
	}
	if out := pre("style", "x", "preset", "vaporwave"); !out.Reject || !strings.Contains(out.Reason, "parameter preset") {
		t.Fatalf("unknown preset: %+v", out)
	}
}

func TestBlocklistMatchesWholeTerms(t *testing.T) {
	list := []string{"words", "gore, Red Wine"}
	if out := pre("blocklist", "a glass of RED wine!", list...); !out.Reject || out.Reason != `prompt contains the blocked term "red wine"` {
		t.Fatalf("multi-word term: %+v", out)
	}
	if out := pre("blocklist", "gorEfest in the rain", list...); out.Reject {
		t.Fatalf("substring matched: %+v", out)
	}
	if out := pre("blocklist", "red, wine", list...); !out.Reject {
		t.Fatal("punctuation between words should still match")
	}
	if out := pre("blocklist", "anything goes"); out.Reject {
		t.Fatal("empty list rejected")
	}
}

func image(w, h uint32, rgba ...byte) abi.Image {
	im := abi.Image{Width: w, Height: h, Pix: make([]byte, 4*w*h)}
	for p := 0; p < len(im.Pix); p += 4 {
		copy(im.Pix[p:p+4], rgba)
	}
	return im
}

func post(node string, im abi.Image, ps ...string) abi.PostOutput {
	in := abi.PostInput{Node: node, Image: im}
	for i := 0; i+1 < len(ps); i += 2 {
		in.Params = append(in.Params, abi.Param{Key: ps[i], Value: ps[i+1]})
	}
	return Post(&in)
}

func TestResizeAndCropSizes(t *testing.T) {
	src := image(512, 256, 9, 9, 9, 255)
	for _, c := range []struct {
		node   string
		params []string
		w, h   uint32
	}{
		{"resize", []string{"width", "128"}, 128, 64},
		{"resize", []string{"height", "64"}, 128, 64},
		{"resize", []string{"width", "100", "height", "30", "filter", "nearest"}, 100, 30},
		{"resize", []string{"scale", "0.5"}, 256, 128},
		{"crop", []string{"aspect", "1:1"}, 256, 256},
		{"crop", []string{"x", "10", "y", "20", "width", "30", "height", "40"}, 30, 40},
		{"crop", []string{"x", "500"}, 12, 256},
	} {
		out := post(c.node, src, c.params...)
		if out.Reject {
			t.Fatalf("%s %v: %s", c.node, c.params, out.Reason)
		}
		if err := abi.ValidatePost(&out, 0); err != nil {
			t.Fatal(err)
		}
		if out.Image.Width != c.w || out.Image.Height != c.h || out.Image.Pix[0] != 9 {
			t.Fatalf("%s %v: got %d×%d", c.node, c.params, out.Image.Width, out.Image.Height)
		}
	}
	for _, bad := range [][]string{{"width", "0"}, {"scale", "100"}, {"filter", "cubic", "width", "3"}, {}} {
		if out := post("resize", src, bad...); !out.Reject || !strings.Contains(out.Reason, "parameter") {
			t.Fatalf("resize %v accepted: %+v", bad, out)
		}
	}
	if out := post("crop", src, "x", "500", "width", "20"); !out.Reject {
		t.Fatal("crop past the edge accepted")
	}
}

func TestWatermarkAndGrayscale(t *testing.T) {
	im := image(256, 256, 200, 0, 0, 255)
	out := post("watermark", im, "text", "KILN", "color", "#00ff00")
	if out.Reject {
		t.Fatal(out.Reason)
	}
	green := 0
	for y := 200; y < 256; y++ {
		for x := 200; x < 256; x++ {
			p := out.Image.Pix[4*(y*256+x):]
			if p[1] == 255 && p[0] == 0 {
				green++
			}
		}
	}
	if green < 20 {
		t.Fatalf("only %d green glyph pixels in the bottom-right corner", green)
	}
	if p := out.Image.Pix[:4]; p[0] != 200 || p[1] != 0 {
		t.Fatalf("top-left pixel touched: %v", p)
	}
	out = post("grayscale", image(2, 2, 255, 0, 0, 255))
	if p := out.Image.Pix; out.Reject || p[0] != 54 || p[1] != 54 || p[2] != 54 {
		t.Fatalf("grayscale: %+v", out)
	}
	if out := post("watermark", im, "position", "middle"); !out.Reject {
		t.Fatal("bad position accepted")
	}
}

func TestCheckParams(t *testing.T) {
	if err := CheckParams("resize", []abi.Param{{Key: "width", Value: "-3"}}); err == nil {
		t.Fatal("bad width passed")
	}
	if err := CheckParams("style", []abi.Param{{Key: "preset", Value: "photo"}}); err != nil {
		t.Fatal(err)
	}
	if err := CheckParams("nope", nil); err == nil {
		t.Fatal("unknown node passed")
	}
	for _, n := range Names() {
		if _, ok := Hook(n); !ok {
			t.Fatalf("%s has no hook", n)
		}
	}
}
