package vae

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// TestSDXLFixture checks the tiny SDXL VAE (2 layers per block, scaling
// factor 0.13025, force_upcast) against diffusers: decode, and the
// posterior of encode.
func TestSDXLFixture(t *testing.T) {
	dir := "../sdxl/testdata"
	js, err := os.ReadFile(filepath.Join(dir, "base/vae/config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(js)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ScalingFactor != 0.13025 || !cfg.ForceUpcast {
		t.Errorf("scaling factor %v, force_upcast %v; want 0.13025, true", cfg.ScalingFactor, cfg.ForceUpcast)
	}
	w, err := safetensors.Open(filepath.Join(dir, "base/vae/diffusion_pytorch_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	m, err := New(cpu.New(), cfg, w)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := safetensors.Open(filepath.Join(dir, "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	check := func(name string, got []float32) {
		want, _ := refTensor(t, ref, name)
		if e := fixtures.RelErr(got, want); e > 1e-4 {
			t.Errorf("%s: relative error %.3g > 1e-4", name, e)
		} else {
			t.Logf("%s: relative error %.3g", name, e)
		}
	}
	z, zs := refTensor(t, ref, "vae/dec_in")
	img, _, err := m.Decode(context.Background(), z, zs)
	if err != nil {
		t.Fatal(err)
	}
	check("vae/dec_out", img)
	x, xs := refTensor(t, ref, "vae/enc_in")
	mean, logvar, _, err := m.Encode(context.Background(), x, xs)
	if err != nil {
		t.Fatal(err)
	}
	check("vae/enc_mean", mean)
	check("vae/enc_logvar", logvar)
}
