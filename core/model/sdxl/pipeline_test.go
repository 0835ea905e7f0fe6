package sdxl_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/model/families"
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// openPipeline builds a fixture model through the family registry, as
// kiln generate and the worker do.
func openPipeline(t *testing.T, path string, opts family.OpenOptions) *pipeline.Pipeline {
	t.Helper()
	f, err := families.All().Find(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Name() != "sdxl" {
		t.Fatalf("%s is served by family %q", path, f.Name())
	}
	cp, err := f.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	m, err := cp.Build(cpu.New())
	if err != nil {
		cp.Close()
		t.Fatal(err)
	}
	p, err := pipeline.New(m)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestPipelineThroughSeam runs the fixtures' SDXL cases (base and refiner)
// through
// core/pipeline (the family seam), as a request from kiln generate or the
// API runs: latents within 1e-3 of diffusers.
func TestPipelineThroughSeam(t *testing.T) {
	ref, err := safetensors.Open(filepath.Join("testdata", "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	js, err := os.ReadFile(filepath.Join("testdata", "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Pipelines map[string]struct {
			Prompt   string  `json:"prompt"`
			Negative string  `json:"negative_prompt"`
			Prompt2  string  `json:"prompt_2"`
			Neg2     string  `json:"negative_prompt_2"`
			Steps    int     `json:"steps"`
			Guidance float64 `json:"guidance_scale"`
			Seed     uint64  `json:"seed"`
			N        int     `json:"num_images_per_prompt"`
			Strength float64 `json:"strength"`
			Height   int     `json:"height"`
			Width    int     `json:"width"`
			Orig     []int   `json:"original_size"`
			Crop     []int   `json:"crops_coords_top_left"`
			Target   []int   `json:"target_size"`
			NegOrig  []int   `json:"negative_original_size"`
			NegCrop  []int   `json:"negative_crops_coords_top_left"`
			NegTgt   []int   `json:"negative_target_size"`
			Score    float64 `json:"aesthetic_score"`
			NegScore float64 `json:"negative_aesthetic_score"`
		} `json:"pipelines"`
	}
	if err := json.Unmarshal(js, &meta); err != nil {
		t.Fatal(err)
	}
	base := openPipeline(t, filepath.Join("testdata", "base"), family.OpenOptions{})
	if w, h := base.DefaultSize(); w != 64 || h != 64 {
		t.Errorf("native size %d×%d, want 64×64 (sample_size 16 × factor 4)", w, h)
	}
	init, _, err := safetensors.Float32(ref, "pipe/init_image")
	if err != nil {
		t.Fatal(err)
	}
	refiner := openPipeline(t, filepath.Join("testdata", "refiner"), family.OpenOptions{})
	pair := func(v []int) [2]int {
		if len(v) != 2 {
			return [2]int{}
		}
		return [2]int{v[0], v[1]}
	}
	for name, sampler := range map[string]string{
		"txt2img_euler": "euler", "txt2img_euler_a": "euler_a", "txt2img_dpmpp_2m_karras": "dpmpp_2m_karras",
		"txt2img_euler_negative": "euler", "txt2img_euler_nocfg": "euler", "txt2img_euler_batch2": "euler",
		"img2img_euler": "euler", "txt2img_euler_microcond": "euler", "refiner_img2img": "euler",
		"txt2img_euler_prompt2": "euler",
	} {
		t.Run(name, func(t *testing.T) {
			c := meta.Pipelines[name]
			req := pipeline.Request{Prompt: c.Prompt, NegativePrompt: c.Negative, Prompt2: c.Prompt2, NegativePrompt2: c.Neg2, Width: 64, Height: 64, Steps: c.Steps,
				N: max(c.N, 1), Guidance: c.Guidance, Sampler: sampler, Seed: c.Seed, SharedGenerator: true,
				Truncate: true, SkipDecode: true}
			if c.Height > 0 {
				req.Width, req.Height = c.Width, c.Height
			}
			req.Micro = family.Micro{OriginalSize: pair(c.Orig), CropTopLeft: pair(c.Crop), TargetSize: pair(c.Target),
				NegativeOriginalSize: pair(c.NegOrig), NegativeCropTopLeft: pair(c.NegCrop), NegativeTargetSize: pair(c.NegTgt),
				AestheticScore: c.Score, NegativeAestheticScore: c.NegScore}
			if c.Strength > 0 {
				req.InitPixels, req.Strength = init, c.Strength
			}
			p := base
			if name == "refiner_img2img" {
				p = refiner
			}
			res, err := p.Generate(context.Background(), req, nil)
			if err != nil {
				t.Fatal(err)
			}
			want, _, err := safetensors.Float32(ref, "pipe/"+name+"/latents")
			if err != nil {
				t.Fatal(err)
			}
			if e := fixtures.RelErr(res.Latents, want); e > 1e-3 {
				t.Errorf("relative error %.3g > 1e-3", e)
			} else {
				t.Logf("relative error %.3g", e)
			}
		})
	}
}

// TestHandoffThroughSeam: base → refiner on one request (pipeline.Refine)
// and through the two primitives (denoising_end, then init latents with
// denoising_start), against diffusers' hand-off.
func TestHandoffThroughSeam(t *testing.T) {
	ref, err := safetensors.Open(filepath.Join("testdata", "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	base := openPipeline(t, filepath.Join("testdata", "base"), family.OpenOptions{})
	refiner := openPipeline(t, filepath.Join("testdata", "refiner"), family.OpenOptions{})
	want := func(key string) []float32 {
		v, _, err := safetensors.Float32(ref, key)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	check := func(what string, got, want []float32) {
		t.Helper()
		if e := fixtures.RelErr(got, want); e > 1e-3 {
			t.Errorf("%s: relative error %.3g > 1e-3", what, e)
		} else {
			t.Logf("%s: relative error %.3g", what, e)
		}
	}
	req := pipeline.Request{Prompt: "a red circle on a blue background", Width: 64, Height: 64, Steps: 10, Guidance: 5,
		Sampler: "euler", Seed: 42, Truncate: true, SkipDecode: true}
	evals := 0
	res, err := pipeline.Refine(context.Background(), base, refiner, req, 0.8, func(pr pipeline.Progress) { evals = pr.Step })
	if err != nil {
		t.Fatal(err)
	}
	check("Refine euler", res.Latents, want("pipe/handoff_euler/latents"))
	if evals != 10 {
		t.Errorf("progress counted %d evaluations, want 8 + 2", evals)
	}

	// euler_a draws noise in both halves: the fixture seeds them 42 and 43.
	req.Sampler = "euler_a"
	first := req
	first.DenoisingEnd = 0.8
	r1, err := base.Generate(context.Background(), first, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("base with denoising_end", r1.Latents, want("pipe/handoff_euler_a/base/latents"))
	second := req
	second.Seed, second.InitLatents, second.DenoisingStart = 43, r1.Latents, 0.8
	r2, err := refiner.Generate(context.Background(), second, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("refiner with denoising_start", r2.Latents, want("pipe/handoff_euler_a/latents"))

	for _, bad := range []pipeline.Request{
		{Prompt: "x", Steps: 10, DenoisingEnd: 1.5},
		{Prompt: "x", Steps: 10, DenoisingStart: 0.5},
		{Prompt: "x", Steps: 10, InitLatents: make([]float32, 3), DenoisingStart: 0.5},
		{Prompt: "x", Steps: 10, InitLatents: r1.Latents},
		{Prompt: "x", Steps: 10, Width: 64, Height: 64, DenoisingEnd: 0.01},
	} {
		if _, err := base.Generate(context.Background(), bad, nil); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := pipeline.Refine(context.Background(), base, refiner, req, 1, nil); err == nil {
		t.Error("switch 1 accepted")
	}
}
