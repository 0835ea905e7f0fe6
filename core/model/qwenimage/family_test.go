package qwenimage_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/model/families"
	"github.com/kiln-project/kiln/core/model/qwenimage"
	"github.com/kiln-project/kiln/core/model/qwenimage/qitest"
	"github.com/kiln-project/kiln/core/pipeline"
)

// familyMeta is the part of meta.json the family tests read.
type familyMeta struct {
	Negative string `json:"negative"`
	Pipe     struct {
		Width, Height, Steps int
		Seed                 uint64
		Runs                 map[string]struct {
			Prompt string  `json:"prompt"`
			CFG    float64 `json:"true_cfg_scale"`
		}
	}
	I2I struct {
		Prompt   string  `json:"prompt"`
		Negative string  `json:"negative_prompt"`
		CFG      float64 `json:"true_cfg_scale"`
		Strength float64
		Seed     uint64
		Steps    int
		Width    int
		Height   int
	} `json:"i2i"`
}

// TestFamilyIsRegistered: the fixture folder is claimed by the qwen-image
// family of families.All, whose defaults are the model card's.
func TestFamilyIsRegistered(t *testing.T) {
	dir := filepath.Join(qitest.Dir(), "pipe")
	f, err := families.All().Find(dir)
	if err != nil {
		t.Fatal(err)
	}
	if f.Name() != "qwen-image" {
		t.Fatalf("family %q claims the Qwen-Image folder", f.Name())
	}
	d, err := families.All().Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := family.Defaults{Width: 1328, Height: 1328, Factor: 8, LatentChannels: 4, ContextDim: d.ContextDim,
		Guidance: family.GuidanceTrueCFG, SchedulerConfig: d.SchedulerConfig, Steps: 50, GuidanceScale: 4}
	if d.ContextDim < 1 || len(d.SchedulerConfig) == 0 {
		t.Fatalf("defaults %+v", d)
	}
	d.LatentRGB = nil
	if d.Width != want.Width || d.Height != want.Height || d.Factor != want.Factor || d.LatentChannels != want.LatentChannels ||
		d.Guidance != want.Guidance || d.Steps != want.Steps || d.GuidanceScale != want.GuidanceScale {
		t.Fatalf("defaults %+v, want %+v", d, want)
	}
	if _, err := f.Open(dir, family.OpenOptions{Prediction: "epsilon"}); err == nil {
		t.Fatal("a prediction override was accepted")
	}
}

// TestGenerateThroughTheFamily: `kiln generate`'s path (pipeline.Load on
// the diffusers folder, pipeline.Generate with a seed) reproduces
// diffusers' QwenImagePipeline latents and image without and with true CFG
// (prompt and negative prompt of different token counts), and
// QwenImageImg2ImgPipeline's latents from an 8-bit init image, within
// 1e-3.
func TestGenerateThroughTheFamily(t *testing.T) {
	var m familyMeta
	qitest.Meta(t, &m)
	refs := qitest.Refs(t)
	ctx := context.Background()
	p, err := pipeline.Load(ctx, cpu.New(), filepath.Join(qitest.Dir(), "pipe"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	W, H := m.Pipe.Width, m.Pipe.Height
	pack := func(lat []float32) []float32 { return qwenimage.Pack(lat, 1, 4, H/8, W/8, 2) }
	for _, name := range []string{"t2i", "t2i_cfg"} {
		t.Run(name, func(t *testing.T) {
			run := m.Pipe.Runs[name]
			req := pipeline.Request{Prompt: run.Prompt, Width: W, Height: H, Steps: m.Pipe.Steps, Seed: m.Pipe.Seed, Guidance: run.CFG}
			if run.CFG > 1 {
				req.NegativePrompt = m.Negative
			}
			steps := 0
			res, err := p.Generate(ctx, req, func(pr pipeline.Progress) {
				steps++
				if pr.Step != steps || pr.Steps != m.Pipe.Steps {
					t.Errorf("progress %d/%d after %d steps", pr.Step, pr.Steps, steps)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if steps != m.Pipe.Steps {
				t.Errorf("%d progress calls, want %d", steps, m.Pipe.Steps)
			}
			want, _ := qitest.Tensor(t, refs, "pipe."+name+".latents")
			qitest.Check(t, "latents", pack(res.Latents), want, 1e-3)
			img, _ := qitest.Tensor(t, refs, "pipe."+name+".image") // (1, H, W, 3)
			got := make([]float32, len(img))
			for c := range 3 {
				for i := range H * W {
					got[i*3+c] = res.Pixels[c*H*W+i]
				}
			}
			qitest.Check(t, "image", got, img, 1e-3)
			if len(res.Images) != 1 || res.Images[0].Bounds().Dx() != W {
				t.Fatalf("images %v", res.Images)
			}
		})
	}
	t.Run("img2img", func(t *testing.T) {
		u8, _ := qitest.Tensor(t, refs, "i2i.image_u8") // (H, W, 3)
		px := make([]float32, 3*H*W)
		for c := range 3 {
			for i := range H * W {
				px[c*H*W+i] = u8[i*3+c] / 255
			}
		}
		i := m.I2I
		res, err := p.Generate(ctx, pipeline.Request{Prompt: i.Prompt, NegativePrompt: i.Negative, Guidance: i.CFG, Width: i.Width,
			Height: i.Height, Steps: i.Steps, Seed: i.Seed, InitPixels: px, Strength: i.Strength, SkipDecode: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := qitest.Tensor(t, refs, "i2i.latents")
		qitest.Check(t, "img2img latents", pack(res.Latents), want, 1e-3)
	})
	t.Run("refused", func(t *testing.T) {
		for _, req := range []pipeline.Request{
			{Prompt: "a", Width: W, Height: H, Steps: 1, Sampler: "euler"},
			{Prompt: "a", Width: W, Height: H, Steps: 1, GuidanceRescale: 0.5},
			{Prompt: "a", Prompt2: "b", Width: W, Height: H, Steps: 1},
			{Prompt: "a", Width: 40, Height: H, Steps: 1},
		} {
			if _, err := p.Generate(ctx, req, nil); err == nil {
				t.Errorf("%+v: no error", req)
			}
		}
	})
}
