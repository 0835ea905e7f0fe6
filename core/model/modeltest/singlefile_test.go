package modeltest_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/checkpoint"
	"github.com/kiln-project/kiln/core/model/unet"
	"github.com/kiln-project/kiln/core/model/vae"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// TestSingleFileFixture writes the fixture model in the original
// single-file layout, loads it back through core/checkpoint (configs
// inferred from the tensor shapes) and checks that the UNet and VAE built
// from it reproduce the reference outputs.
func TestSingleFileFixture(t *testing.T) {
	dir := fixtures.Require(t, "sd15-tiny/model")
	ref, err := safetensors.Open(fixtures.Require(t, "sd15-tiny/reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	folder, err := checkpoint.Load(dir, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer folder.Close()
	path := filepath.Join(t.TempDir(), "sd15-tiny.safetensors")
	if err := checkpoint.WriteSingleFile(path, folder, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The fixture's text encoder has a head count no shape reveals.
	teCfg, err := os.ReadFile(filepath.Join(dir, "text_encoder", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := checkpoint.Load(path, checkpoint.Options{TokenizerDir: folder.TokenizerDir, TextEncoderConfig: teCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Layout != checkpoint.LayoutSingleFile {
		t.Fatalf("layout %s", m.Layout)
	}
	be := cpu.New()
	get := func(name string) ([]float32, [4]int) {
		v, s, err := safetensors.Float32(ref, name)
		if err != nil {
			t.Fatal(err)
		}
		var shape [4]int
		copy(shape[:], s)
		return v, shape
	}
	check := func(what string, got, want []float32) {
		if e := fixtures.RelErr(got, want); e > 1e-4 {
			t.Errorf("%s from the single file: relative error %.3g > 1e-4", what, e)
		}
	}

	ucfg, err := unet.ParseConfig(m.UNetConfig)
	if err != nil {
		t.Fatalf("inferred UNet config: %v\n%s", err, m.UNetConfig)
	}
	u, err := unet.New(be, ucfg, m.UNet)
	if err != nil {
		t.Fatal(err)
	}
	sample, ss := get("unet/in_sample")
	ts, _ := get("unet/in_timesteps")
	cond, cs := get("unet/in_context")
	out, err := u.Forward(context.Background(), sample, ss, ts, cond, cs[1])
	if err != nil {
		t.Fatal(err)
	}
	want, _ := get("unet/out")
	check("unet/out", out, want)

	vcfg, err := vae.ParseConfig(m.VAEConfig)
	if err != nil {
		t.Fatalf("inferred VAE config: %v\n%s", err, m.VAEConfig)
	}
	v, err := vae.New(be, vcfg, m.VAE)
	if err != nil {
		t.Fatal(err)
	}
	z, zs := get("vae/dec_in")
	img, _, err := v.Decode(context.Background(), z, zs)
	if err != nil {
		t.Fatal(err)
	}
	want, _ = get("vae/dec_out")
	check("vae/dec_out", img, want)
	x, xs := get("vae/enc_in")
	mean, logvar, _, err := v.Encode(context.Background(), x, xs)
	if err != nil {
		t.Fatal(err)
	}
	want, _ = get("vae/enc_mean")
	check("vae/enc_mean", mean, want)
	want, _ = get("vae/enc_logvar")
	check("vae/enc_logvar", logvar, want)
}
