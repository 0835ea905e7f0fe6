package main

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/internal/fixtures"
)

func writeTestPNG(t *testing.T, path string, im image.Image) {
	t.Helper()
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(fh, im); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
}

func readTestPNG(t *testing.T, path string) (image.Image, string) {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	im, err := png.Decode(fh)
	if err != nil {
		t.Fatal(err)
	}
	fh.Seek(0, 0)
	s, _ := imageio.ReadParameters(fh)
	return im, s
}

// TestGenerateInpaintOutpaintVariation runs --mask, --outpaint and
// --subseed end to end on the fixture model.
func TestGenerateInpaintOutpaintVariation(t *testing.T) {
	model := fixtures.Require(t, "sd15-tiny/model")
	dir := t.TempDir()
	init := image.NewRGBA(image.Rect(0, 0, 64, 64))
	mask := image.NewGray(image.Rect(0, 0, 64, 64))
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			init.SetRGBA(x, y, color.RGBA{uint8(4 * x), uint8(4 * y), 90, 255})
			if x >= 16 && x < 32 && y >= 16 && y < 32 {
				mask.SetGray(x, y, color.Gray{Y: 255})
			}
		}
	}
	initPath, maskPath := filepath.Join(dir, "init.png"), filepath.Join(dir, "mask.png")
	writeTestPNG(t, initPath, init)
	writeTestPNG(t, maskPath, mask)
	run := func(out string, extra ...string) (image.Image, string) {
		var stdout, stderr bytes.Buffer
		args := append([]string{"generate", "--model", model, "--prompt", "x", "--steps", "3", "--seed", "3", "--output", out}, extra...)
		if code := runMain(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", extra, code, stderr.String())
		}
		return readTestPNG(t, out)
	}
	im, params := run(filepath.Join(dir, "in.png"), "--init-image", initPath, "--mask", maskPath, "--mask-blur", "2", "--strength", "1")
	reach := image.Rect(16, 16, 32, 32).Inset(-5)
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			r, g, b, _ := im.At(x, y).RGBA()
			want := init.RGBAAt(x, y)
			if !(image.Point{x, y}.In(reach)) && (uint8(r>>8) != want.R || uint8(g>>8) != want.G || uint8(b>>8) != want.B) {
				t.Fatalf("inpainted pixel (%d,%d) outside the mask changed", x, y)
			}
		}
	}
	if !strings.Contains(params, "Mask blur: 2") {
		t.Fatalf("parameters %q", params)
	}
	_, params = run(filepath.Join(dir, "full.png"), "--init-image", initPath, "--mask", maskPath, "--inpaint-full-res",
		"--inpaint-full-res-padding", "8", "--width", "32", "--height", "32")
	if !strings.Contains(params, "Only masked padding, pixels: 8") {
		t.Fatalf("parameters %q", params)
	}
	im, _ = run(filepath.Join(dir, "out.png"), "--init-image", initPath, "--outpaint", "0,16,8,0")
	if b := im.Bounds(); b.Dx() != 80 || b.Dy() != 72 {
		t.Fatalf("outpainted size %v, want 80×72", b)
	}
	_, params = run(filepath.Join(dir, "var.png"), "--subseed", "42", "--subseed-strength", "0.3")
	if !strings.Contains(params, "Variation seed: 42") || !strings.Contains(params, "Variation seed strength: 0.3") {
		t.Fatalf("parameters %q", params)
	}
}

// TestGenerateEditErrors checks the edit flags' usage errors.
func TestGenerateEditErrors(t *testing.T) {
	cases := map[string][]string{
		"mask without init":  {"--mask", "m.png"},
		"mask and outpaint":  {"--init-image", "a.png", "--mask", "m.png", "--outpaint", "8,0,0,0"},
		"bad outpaint":       {"--init-image", "a.png", "--outpaint", "8,0"},
		"empty outpaint":     {"--init-image", "a.png", "--outpaint", "0,0,0,0"},
		"bad fill":           {"--init-image", "a.png", "--mask", "m.png", "--inpaint-fill", "blue"},
		"blur without mask":  {"--mask-blur", "3"},
		"bad strength":       {"--subseed-strength", "1.5"},
		"bad resize":         {"--seed-resize-from", "64"},
		"full res no mask":   {"--inpaint-full-res"},
		"bad padding":        {"--init-image", "a.png", "--mask", "m.png", "--inpaint-full-res", "--inpaint-full-res-padding", "-1"},
		"negative mask blur": {"--init-image", "a.png", "--mask", "m.png", "--mask-blur", "-1"},
	}
	for name, args := range cases {
		var stdout, stderr bytes.Buffer
		code := runMain(context.Background(), append([]string{"generate", "--prompt", "x"}, args...), &stdout, &stderr)
		if code != 2 {
			t.Errorf("%s: exit %d, want 2 (%s)", name, code, stderr.String())
		}
	}
}
