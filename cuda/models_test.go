package cuda

import (
	"context"
	"math"
	"testing"

	"github.com/kiln-project/kiln/core/checkpoint"
	"github.com/kiln-project/kiln/core/model/clip"
	"github.com/kiln-project/kiln/core/model/unet"
	"github.com/kiln-project/kiln/core/model/vae"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// fixtureModel opens the sd15-tiny model folder and the reference tensors.
func fixtureModel(t *testing.T) (*checkpoint.Model, *safetensors.File) {
	t.Helper()
	dir := fixtures.Require(t, "sd15-tiny/model")
	refPath := fixtures.Require(t, "sd15-tiny/reference.safetensors")
	m, err := checkpoint.Load(dir, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	ref, err := safetensors.Open(refPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ref.Close() })
	return m, ref
}

func refF32(t *testing.T, ref safetensors.Source, name string) ([]float32, []int) {
	t.Helper()
	v, shape, err := safetensors.Float32(ref, name)
	if err != nil {
		t.Fatalf("reference %s: %v", name, err)
	}
	return v, shape
}

func checkRel(t *testing.T, what string, tg target, got, want []float32) {
	t.Helper()
	e := fixtures.RelErr(got, want)
	if e > tg.tol || math.IsNaN(e) {
		t.Errorf("%s on %s: relative error %.3g > %.3g", what, tg.name, e, tg.tol)
	} else {
		t.Logf("%s on %s: relative error %.3g", what, tg.name, e)
	}
}

// TestFixtureTextEncoder runs the fixture CLIP text encoder on each target.
func TestFixtureTextEncoder(t *testing.T) {
	m, ref := fixtureModel(t)
	cfg, err := clip.ParseConfig(m.TextEncoderConfig)
	if err != nil {
		t.Fatal(err)
	}
	ids64, shape, err := safetensors.Int64(ref, "tok/input_ids")
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int32, len(ids64))
	for i, v := range ids64 {
		ids[i] = int32(v)
	}
	wantHidden, _ := refF32(t, ref, "te/last_hidden_state")
	wantPooled, _ := refF32(t, ref, "te/pooled")
	wantSkip, _ := refF32(t, ref, "te/clip_skip2")
	for _, tg := range targets(t) {
		enc, err := clip.New(tg.be, cfg, m.TextEncoder)
		if err != nil {
			t.Fatalf("%s: %v", tg.name, err)
		}
		for run := 0; run < 3; run++ { // the third run replays a captured graph
			hidden, pooled, err := enc.Encode(context.Background(), ids, shape[0], 0)
			if err != nil {
				t.Fatalf("%s: %v", tg.name, err)
			}
			checkRel(t, "te/last_hidden_state", tg, hidden, wantHidden)
			checkRel(t, "te/pooled", tg, pooled, wantPooled)
		}
		skip, _, err := enc.Encode(context.Background(), ids, shape[0], 2)
		if err != nil {
			t.Fatalf("%s: %v", tg.name, err)
		}
		checkRel(t, "te/clip_skip2", tg, skip, wantSkip)
	}
}

// TestFixtureUNet runs the fixture UNet on each target, three times so that
// the graph path (capture, then replay) is exercised.
func TestFixtureUNet(t *testing.T) {
	m, ref := fixtureModel(t)
	cfg, err := unet.ParseConfig(m.UNetConfig)
	if err != nil {
		t.Fatal(err)
	}
	sample, ss := refF32(t, ref, "unet/in_sample")
	ts, _ := refF32(t, ref, "unet/in_timesteps")
	cond, cs := refF32(t, ref, "unet/in_context")
	want, _ := refF32(t, ref, "unet/out")
	wantScalar, _ := refF32(t, ref, "unet/out_scalar_t")
	shape := [4]int{ss[0], ss[1], ss[2], ss[3]}
	for _, tg := range targets(t) {
		u, err := unet.New(tg.be, cfg, m.UNet)
		if err != nil {
			t.Fatalf("%s: %v", tg.name, err)
		}
		for run := 0; run < 3; run++ {
			got, err := u.Forward(context.Background(), sample, shape, ts, cond, cs[1])
			if err != nil {
				t.Fatalf("%s: %v", tg.name, err)
			}
			checkRel(t, "unet/out", tg, got, want)
		}
		got, err := u.Forward(context.Background(), sample, shape, []float32{250}, cond, cs[1])
		if err != nil {
			t.Fatalf("%s: %v", tg.name, err)
		}
		checkRel(t, "unet/out_scalar_t", tg, got, wantScalar)
	}
}

// TestFixtureVAE runs the fixture VAE decoder and encoder on each target
// (F32 and BF16 views, the precisions a VAE runs in, and F16).
func TestFixtureVAE(t *testing.T) {
	m, ref := fixtureModel(t)
	cfg, err := vae.ParseConfig(m.VAEConfig)
	if err != nil {
		t.Fatal(err)
	}
	decIn, ds := refF32(t, ref, "vae/dec_in")
	decOut, _ := refF32(t, ref, "vae/dec_out")
	encIn, es := refF32(t, ref, "vae/enc_in")
	encMean, _ := refF32(t, ref, "vae/enc_mean")
	encLogvar, _ := refF32(t, ref, "vae/enc_logvar")
	for _, tg := range targets(t) {
		v, err := vae.New(tg.be, cfg, m.VAE)
		if err != nil {
			t.Fatalf("%s: %v", tg.name, err)
		}
		img, _, err := v.Decode(context.Background(), decIn, [4]int{ds[0], ds[1], ds[2], ds[3]})
		if err != nil {
			t.Fatalf("%s: %v", tg.name, err)
		}
		checkRel(t, "vae/dec_out", tg, img, decOut)
		mean, logvar, _, err := v.Encode(context.Background(), encIn, [4]int{es[0], es[1], es[2], es[3]})
		if err != nil {
			t.Fatalf("%s: %v", tg.name, err)
		}
		checkRel(t, "vae/enc_mean", tg, mean, encMean)
		tol := tg
		if tg.be.ActivationDType() != tensor.F32 {
			tol.tol *= 3 // log-variance: differences of nearly equal numbers
		}
		checkRel(t, "vae/enc_logvar", tol, logvar, encLogvar)
	}
}
