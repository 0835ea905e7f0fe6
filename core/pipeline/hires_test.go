package pipeline

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/resample"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// hiresPipe loads the committed tiny SD model (64² native) on the CPU.
func hiresPipe(t *testing.T) *Pipeline {
	t.Helper()
	p, err := Load(context.Background(), cpu.New(), filepath.Join(parityDir, "sd4"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func hiresRequest(up string) Request {
	return Request{Prompt: "a red circle", Steps: 4, Guidance: 5, Seed: 3, Sampler: "euler_a",
		Hires: Hires{Scale: 1.5, Upscaler: up, Steps: 6, Denoise: 0.5}}
}

// TestHiresLanczosIsTwoPasses checks the image-space hires fix against the
// two passes run by hand: a native-size txt2img, its decoded image enlarged
// with the Lanczos-3 filter and clamped, then img2img at the hires size
// with the hires steps and denoise — bit-identical, at 96² from 64².
// Progress counts the evaluations of both passes.
func TestHiresLanczosIsTwoPasses(t *testing.T) {
	p := hiresPipe(t)
	req := hiresRequest(UpscaleLanczos)
	var steps []int
	total := 0
	res, err := p.Generate(context.Background(), req, func(pr Progress) {
		steps = append(steps, pr.Step)
		total = pr.Steps
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.PixelShape != [4]int{1, 3, 96, 96} || res.Images[0].Bounds().Dx() != 96 || res.HiresFrom != [2]int{64, 64} {
		t.Fatalf("hires result %v, want 96×96", res.PixelShape)
	}
	// 4 first-pass steps, then 3 of 6 at denoise 0.5
	if total != 7 || len(steps) != 7 || steps[0] != 1 || steps[6] != 7 {
		t.Fatalf("progress steps %v of %d, want 1..7 of 7", steps, total)
	}
	first := req
	first.Hires = Hires{}
	r1 := generate(t, p, first)
	up, err := resample.Lanczos(r1.Pixels, 3, 64, 64, 96, 96)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range up {
		up[i] = min(max(v, 0), 1)
	}
	second := first
	second.Width, second.Height, second.Steps, second.Strength, second.InitPixels = 96, 96, 6, 0.5, up
	r2 := generate(t, p, second)
	if !sameFloats(r2.Latents, res.Latents) || !sameFloats(r2.Pixels, res.Pixels) {
		t.Fatalf("hires differs from the two passes by hand: rel err %g", fixtures.RelErr(res.Latents, r2.Latents))
	}
}

// TestHiresLatent checks the latent upscaler: the result has the hires
// size, differs from the image-space upscaler's, and depends on the
// denoise; a size given as a width alone keeps the aspect ratio.
func TestHiresLatent(t *testing.T) {
	p := hiresPipe(t)
	lat := generate(t, p, hiresRequest(UpscaleLatent))
	if lat.LatentShape != [4]int{1, 4, 24, 24} || lat.PixelShape != [4]int{1, 3, 96, 96} {
		t.Fatalf("latent hires shapes %v %v", lat.LatentShape, lat.PixelShape)
	}
	img := generate(t, p, hiresRequest(UpscaleLanczos))
	if fixtures.RelErr(lat.Latents, img.Latents) < 1e-3 {
		t.Fatal("latent and Lanczos upscalers gave the same result")
	}
	more := hiresRequest(UpscaleLatent)
	more.Hires.Denoise = 0.9
	if fixtures.RelErr(generate(t, p, more).Latents, lat.Latents) < 1e-3 {
		t.Fatal("the hires denoise changed nothing")
	}
	again := generate(t, p, hiresRequest(""))
	if !sameFloats(again.Latents, lat.Latents) {
		t.Fatal("the default upscaler is not the latent one, or the run is not reproducible")
	}
	wide := hiresRequest(UpscaleLatent)
	wide.Width, wide.Height = 64, 32
	wide.Hires = Hires{Width: 128}
	if r := generate(t, p, wide); r.PixelShape != [4]int{1, 3, 64, 128} {
		t.Fatalf("width-only hires size gave %v, want 128×64", r.PixelShape)
	}
}

// TestHiresBatchAndRunning checks that hires jobs batch with others: two
// images of one hires job are each the image of a one-image job with its
// seed (each image upscales and encodes its own first pass), a plain job
// in the same GenerateBatch is unchanged, and a running batch gives the
// same results as GenerateBatch.
func TestHiresBatchAndRunning(t *testing.T) {
	p := hiresPipe(t)
	two := hiresRequest(UpscaleLanczos)
	two.N = 2
	plain := Request{Prompt: "a blue square", Steps: 3, Guidance: 4, Seed: 9, Sampler: "euler"}
	res := p.GenerateBatch(context.Background(), []BatchJob{{Request: two}, {Request: plain}}, nil)
	for _, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	per := 4 * 24 * 24
	for i := 0; i < 2; i++ {
		one := hiresRequest(UpscaleLanczos)
		one.Seed += uint64(i)
		alone := generate(t, p, one)
		if e := fixtures.RelErr(res[0].Result.Latents[i*per:(i+1)*per], alone.Latents); e > 1e-5 {
			t.Fatalf("image %d of a hires batch: rel err %g against its one-image job", i, e)
		}
	}
	if !sameFloats(res[1].Result.Latents, generate(t, p, plain).Latents) {
		t.Fatal("a plain job batched with a hires job changed")
	}
	r := p.NewRunning(context.Background())
	got := map[int]BatchResult{}
	ids := map[int]int{}
	for k, req := range []Request{two, plain} {
		id, err := r.Add(BatchJob{Request: req}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = k
	}
	for r.Len() > 0 {
		for _, f := range r.Step() {
			got[ids[f.ID]] = f.Result
		}
	}
	for k := range res {
		if got[k].Err != nil {
			t.Fatal(got[k].Err)
		}
		if e := fixtures.RelErr(got[k].Result.Latents, res[k].Result.Latents); e > 1e-5 {
			t.Fatalf("running batch job %d: rel err %g against GenerateBatch", k, e)
		}
	}
}

// TestHiresTiledHasNoSeams runs the image-space hires fix with the VAE
// tiled at every encode and decode (16-pixel tiles): the result matches
// the untiled one within 1e-4 relative error in latents and 1e-3 in
// pixels, so the tiles leave no seams.
func TestHiresTiledHasNoSeams(t *testing.T) {
	p := hiresPipe(t)
	if _, ok := p.Model().(family.TiledEncoder); !ok {
		t.Fatal("the SD model has no tiled encoder")
	}
	req := hiresRequest(UpscaleLanczos)
	whole := generate(t, p, req)
	p.SetTiling(1, 16)
	defer p.SetTiling(0, 0)
	tiled := generate(t, p, req)
	e := fixtures.RelErr(tiled.Latents, whole.Latents)
	t.Logf("tiled vs whole: latents rel err %.3g, pixels %.3g", e, fixtures.RelErr(tiled.Pixels, whole.Pixels))
	if e > 1e-4 {
		t.Fatalf("tiled latents: rel err %g", e)
	}
	if e := fixtures.RelErr(tiled.Pixels, whole.Pixels); e > 1e-3 {
		t.Fatalf("tiled pixels: rel err %g", e)
	}
}

// TestHiresRefusals checks that bad hires settings are clear errors.
func TestHiresRefusals(t *testing.T) {
	p := hiresPipe(t)
	cases := map[string]func(r *Request){
		"init image":     func(r *Request) { r.InitImage = testImage(64, 64); r.Strength = 0.5 },
		"scale 1":        func(r *Request) { r.Hires.Scale = 1 },
		"scale 9":        func(r *Request) { r.Hires.Scale = 9 },
		"scale and size": func(r *Request) { r.Hires.Width = 128 },
		"upscaler":       func(r *Request) { r.Hires.Upscaler = "esrgan" },
		"denoise":        func(r *Request) { r.Hires.Denoise = 1.5 },
		"not divisible":  func(r *Request) { r.Hires = Hires{Width: 130, Height: 128} },
		"no target":      func(r *Request) { r.Hires = Hires{Steps: 5} },
		"steps":          func(r *Request) { r.Hires.Steps = -1 },
		"mask":           func(r *Request) { r.Edit.MaskBlur = 4 },
	}
	for name, mod := range cases {
		req := hiresRequest(UpscaleLatent)
		mod(&req)
		_, err := p.Generate(context.Background(), req, nil)
		if err == nil || !strings.Contains(err.Error(), "pipeline:") {
			t.Errorf("%s: got %v, want a pipeline error", name, err)
		}
	}
}
