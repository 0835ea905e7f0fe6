package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// TestGenerateReproducesFixture runs the documented command in-process and
// compares the saved latents with diffusers' pipe/txt2img_euler/latents.
func TestGenerateReproducesFixture(t *testing.T) {
	model := fixtures.Require(t, "sd15-tiny/model")
	ref := fixtures.Require(t, "sd15-tiny/reference.safetensors")
	out := filepath.Join(t.TempDir(), "out.safetensors")
	var stdout, stderr bytes.Buffer
	code := runMain(context.Background(), []string{"generate", "--model", model,
		"--prompt", "a red circle on a blue background", "--steps", "8", "--guidance", "7.5", "--seed", "1234", "--sampler", "model",
		"--rng", "cpu", "--width", "64", "--height", "64", "--emphasis=false", "--save-latents", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	got, shape := readF32(t, out, "latents")
	want, wshape := readF32(t, ref, "pipe/txt2img_euler/latents")
	if len(shape) != 4 || shape[0] != 1 || shape[1] != wshape[1] || shape[2] != 16 || shape[3] != 16 {
		t.Fatalf("latents shape %v", shape)
	}
	if e := fixtures.RelErr(got, want); e > 1e-3 {
		t.Fatalf("latents rel err %g", e)
	}
	if _, err := os.Stat("kiln-1234.png"); err == nil {
		t.Fatal("wrote a PNG although only --save-latents was given")
	}
}

// TestGenerateWritesPNGs checks numbered outputs and their parameters.
func TestGenerateWritesPNGs(t *testing.T) {
	model := fixtures.Require(t, "sd15-tiny/model")
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := runMain(context.Background(), []string{"generate", "--model", model, "--prompt", "a cat, sitting",
		"--negative-prompt", "dog", "--steps", "3", "--seed", "7", "-n", "2", "--width", "32", "--height", "48",
		"--sampler", "dpmpp_2m_karras", "--output", filepath.Join(dir, "img.png")}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for i, seed := range []string{"7", "8"} {
		path := filepath.Join(dir, []string{"img-1.png", "img-2.png"}[i])
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		s, err := imageio.ReadParameters(fh)
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
		p, err := imageio.ParseParameters(s)
		if err != nil {
			t.Fatal(err)
		}
		if p.Prompt != "a cat, sitting" || p.NegativePrompt != "dog" {
			t.Errorf("%s: prompts %q %q", path, p.Prompt, p.NegativePrompt)
		}
		for k, want := range map[string]string{"Seed": seed, "Steps": "3", "Sampler": "DPM++ 2M", "Schedule type": "Karras", "Size": "32x48",
			"CFG scale": "7", "Model": "model", "RNG": "CPU"} {
			if v, _ := p.Get(k); v != want {
				t.Errorf("%s: %s = %q, want %q", path, k, v, want)
			}
		}
		if h, _ := p.Get("Model hash"); len(h) != 10 {
			t.Errorf("%s: Model hash %q", path, h)
		}
	}
}

// TestGenerateImg2Img runs img2img from a PNG file.
func TestGenerateImg2Img(t *testing.T) {
	model := fixtures.Require(t, "sd15-tiny/model")
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	first := filepath.Join(dir, "a.png")
	if code := runMain(context.Background(), []string{"generate", "--model", model, "--prompt", "x", "--steps", "2",
		"--seed", "1", "--output", first}, &stdout, &stderr); code != 0 {
		t.Fatalf("txt2img exit %d: %s", code, stderr.String())
	}
	second := filepath.Join(dir, "b.png")
	if code := runMain(context.Background(), []string{"generate", "--model", model, "--prompt", "x", "--steps", "4",
		"--init-image", first, "--strength", "0.5", "--sampler", "ddim", "--output", second}, &stdout, &stderr); code != 0 {
		t.Fatalf("img2img exit %d: %s", code, stderr.String())
	}
	fh, _ := os.Open(second)
	defer fh.Close()
	s, _ := imageio.ReadParameters(fh)
	if !strings.Contains(s, "Denoising strength: 0.5") {
		t.Fatalf("parameters %q", s)
	}
}

// TestGenerateErrors checks that bad input gives one clear line and a
// non-zero exit.
func TestGenerateErrors(t *testing.T) {
	model := fixtures.Require(t, "sd15-tiny/model")
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad flag", []string{"--model", model, "--stepz", "3"}, 2, "stepz"},
		{"bad number", []string{"--model", model, "--steps", "many"}, 2, "steps"},
		{"unknown sampler", []string{"--model", model, "--sampler", "euler_x"}, 2, "unknown"},
		{"bad rng", []string{"--model", model, "--rng", "gpu"}, 2, "--rng"},
		{"bad device", []string{"--model", model, "--device", "tpu"}, 2, "--device"},
		{"stray argument", []string{"--model", model, "extra"}, 2, "unexpected argument"},
		{"size not divisible", []string{"--model", model, "--width", "66", "--height", "64", "--save-latents", filepath.Join(t.TempDir(), "x")}, 1, "not divisible"},
		{"unreadable model", []string{"--model", filepath.Join(t.TempDir(), "nope")}, 1, "load model"},
		{"missing init image", []string{"--model", model, "--init-image", filepath.Join(t.TempDir(), "none.png")}, 1, "init image"},
		{"init image not an image", []string{"--model", model, "--init-image", model + "/../reference.json"}, 1, "init image"},
		{"bad strength", []string{"--model", model, "--init-image", "x.png", "--strength", "2"}, 2, "--strength"},
		{"bad rescale", []string{"--model", model, "--guidance-rescale", "1.5"}, 2, "--guidance-rescale"},
		{"guidance out of range", []string{"--model", model, "--guidance", "31"}, 2, "--guidance"},
		{"negative guidance", []string{"--model", model, "--guidance", "-1"}, 2, "--guidance"},
		{"clip skip out of range", []string{"--model", model, "--clip-skip", "13"}, 2, "--clip-skip"},
		{"seed out of range", []string{"--model", model, "--seed", "9007199254740992"}, 2, "--seed"},
		{"width out of range", []string{"--model", model, "--width", "8192"}, 2, "--width"},
		{"unknown profile", []string{"--model", model, "--profile", "turbo"}, 2, "--profile"},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		code := runMain(context.Background(), append([]string{"generate"}, c.args...), &stdout, &stderr)
		msg := stderr.String()
		if code != c.code {
			t.Errorf("%s: exit %d, want %d (%s)", c.name, code, c.code, msg)
		}
		if !strings.Contains(msg, c.want) {
			t.Errorf("%s: message %q does not mention %q", c.name, msg, c.want)
		}
		if n := strings.Count(strings.TrimSpace(msg), "\n"); n != 0 {
			t.Errorf("%s: %d lines of error output: %q", c.name, n+1, msg)
		}
	}
}

func TestProgressLine(t *testing.T) {
	l := progressLine(5, 20, 2e9)
	if !strings.Contains(l, "5/20") || !strings.Contains(l, "2.50 it/s") || !strings.Contains(l, "ETA 6s") {
		t.Fatalf("%q", l)
	}
}

func readF32(t *testing.T, path, name string) ([]float32, []int) {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	v, shape, err := safetensors.Float32(f, name)
	if err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), v...), shape
}
