package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// TestGenerateSDXL: kiln generate runs an SDXL base (the tiny fixture) and
// the base→refiner hand-off on one command, matching diffusers' latents.
func TestGenerateSDXL(t *testing.T) {
	dir := "../../core/model/sdxl/testdata"
	ref := filepath.Join(dir, "reference.safetensors")
	for _, c := range []struct {
		name string
		args []string
		key  string
	}{
		{"txt2img", []string{"--seed", "1234", "--steps", "8"}, "pipe/txt2img_euler/latents"},
		{"prompt_2", []string{"--seed", "1238", "--steps", "8", "--negative-prompt", "green", "--prompt-2", "a yellow square at the bottom",
			"--negative-prompt-2", "a black star"}, "pipe/txt2img_euler_prompt2/latents"},
		{"refiner", []string{"--seed", "42", "--steps", "10", "--refiner", filepath.Join(dir, "refiner"), "--refiner-switch", "0.8"}, "pipe/handoff_euler/latents"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.safetensors")
			var stdout, stderr bytes.Buffer
			args := append([]string{"generate", "--model", filepath.Join(dir, "base"), "--prompt", "a red circle on a blue background",
				"--guidance", "5", "--sampler", "euler", "--rng", "cpu", "--width", "64", "--height", "64", "--emphasis=false",
				"--truncate", "--device", "cpu", "--save-latents", out}, c.args...)
			if code := runMain(context.Background(), args, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			got, _ := readF32(t, out, "latents")
			if c.name == "refiner" { // and the PNG says so, as AUTOMATIC1111 writes it
				png := filepath.Join(t.TempDir(), "out.png")
				var so, se bytes.Buffer
				if code := runMain(context.Background(), append(append([]string(nil), args...), "--output", png), &so, &se); code != 0 {
					t.Fatalf("png: exit %d: %s", code, se.String())
				}
				ps := readParameters(t, png)
				if !strings.Contains(ps, "Refiner: refiner, Refiner switch at: 0.8") {
					t.Errorf("parameters %q lack the refiner", ps)
				}
			}
			want, _ := readF32(t, ref, c.key)
			if e := fixtures.RelErr(got, want); e > 1e-3 {
				t.Fatalf("latents rel err %g", e)
			}
		})
	}
}

// readParameters returns a PNG's parameters text.
func readParameters(t *testing.T, path string) string {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	s, err := imageio.ReadParameters(fh)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
