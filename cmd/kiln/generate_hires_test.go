package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestGenerateHires runs --hires end to end on the committed tiny model
// (64² native): a scale and a size, both upscalers, the image at the hires
// size and AUTOMATIC1111's hires parameters with the first pass's size.
func TestGenerateHires(t *testing.T) {
	model := filepath.Join("..", "..", "core", "pipeline", "testdata", "inpaint", "sd4")
	dir := t.TempDir()
	run := func(out string, extra ...string) string {
		var stdout, stderr bytes.Buffer
		args := append([]string{"generate", "--model", model, "--prompt", "x", "--steps", "3", "--seed", "3", "--output", out}, extra...)
		if code := runMain(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", extra, code, stderr.String())
		}
		im, params := readTestPNG(t, out)
		if b := im.Bounds(); b.Dx() != 128 || b.Dy() != 128 {
			t.Fatalf("%v: image %v, want 128×128", extra, b)
		}
		return params
	}
	params := run(filepath.Join(dir, "a.png"), "--hires", "2", "--hires-steps", "4", "--hires-denoise", "0.6")
	for _, want := range []string{"Size: 64x64", "Denoising strength: 0.6", "Hires upscale: 2", "Hires steps: 4", "Hires upscaler: Latent"} {
		if !strings.Contains(params, want) {
			t.Fatalf("parameters %q lack %q", params, want)
		}
	}
	params = run(filepath.Join(dir, "b.png"), "--hires", "128x0", "--hires-upscaler", "lanczos")
	for _, want := range []string{"Size: 64x64", "Denoising strength: 0.5", "Hires resize: 128x0", "Hires upscaler: Lanczos"} {
		if !strings.Contains(params, want) {
			t.Fatalf("parameters %q lack %q", params, want)
		}
	}
}

// TestGenerateHiresErrors checks the hires flags' usage errors.
func TestGenerateHiresErrors(t *testing.T) {
	cases := map[string][]string{
		"scale 1":          {"--hires", "1"},
		"bad size":         {"--hires", "12xq"},
		"with init":        {"--hires", "2", "--init-image", "a.png"},
		"upscaler":         {"--hires", "2", "--hires-upscaler", "esrgan"},
		"denoise":          {"--hires", "2", "--hires-denoise", "0"},
		"steps no hires":   {"--hires-steps", "4"},
		"negative steps":   {"--hires", "2", "--hires-steps", "-1"},
		"denoise no hires": {"--hires-denoise", "0.3"},
	}
	for name, args := range cases {
		var stdout, stderr bytes.Buffer
		code := runMain(context.Background(), append([]string{"generate", "--prompt", "x"}, args...), &stdout, &stderr)
		if code != 2 {
			t.Errorf("%s: exit %d, want 2 (%s)", name, code, stderr.String())
		}
	}
}
