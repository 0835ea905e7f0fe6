package pipeline

import (
	"context"
	"encoding/json"
	"image"
	_ "image/png"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// parityDir holds the inpainting fixtures from diffusers (see
// testdata/inpaint/make_fixtures.py).
var parityDir = filepath.Join("testdata", "inpaint")

// readPNG decodes a PNG of the fixture folder.
func readPNG(t *testing.T, name string) image.Image {
	t.Helper()
	f, err := os.Open(filepath.Join(parityDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	im, _, err := image.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return im
}

// TestInpaintParity runs every case of diffusers' StableDiffusionInpaintPipeline
// and StableDiffusionXLInpaintPipeline fixtures (4-channel UNets with masked
// latent blending, 9-channel inpainting UNets; Euler, Euler a at strength 1,
// DDIM without guidance) through the pipeline and compares the final latents:
// within 1e-3 (relative).
func TestInpaintParity(t *testing.T) {
	ref, err := safetensors.Open(filepath.Join(parityDir, "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	js, err := os.ReadFile(filepath.Join(parityDir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Prompt string `json:"prompt"`
		Cases  map[string]struct {
			Model    string  `json:"model"`
			Sampler  string  `json:"sampler"`
			Seed     uint64  `json:"seed"`
			Strength float64 `json:"strength"`
			Guidance float64 `json:"guidance_scale"`
			Steps    int     `json:"num_inference_steps"`
			Negative string  `json:"negative_prompt"`
		} `json:"cases"`
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal(js, &meta); err != nil {
		t.Fatal(err)
	}
	if len(meta.Errors) != 0 || len(meta.Cases) < 8 {
		t.Fatalf("fixture cases %d, errors %v", len(meta.Cases), meta.Errors)
	}
	init, mask := readPNG(t, "init.png"), readPNG(t, "mask.png")
	pipes := map[string]*Pipeline{}
	names := make([]string, 0, len(meta.Cases))
	for name := range meta.Cases {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c := meta.Cases[name]
		t.Run(name, func(t *testing.T) {
			p := pipes[c.Model]
			if p == nil {
				if p, err = Load(context.Background(), cpu.New(), filepath.Join(parityDir, c.Model)); err != nil {
					t.Fatal(err)
				}
				pipes[c.Model] = p
			}
			req := Request{Prompt: meta.Prompt, NegativePrompt: c.Negative, Width: 64, Height: 64, Steps: c.Steps,
				Guidance: c.Guidance, Sampler: c.Sampler, Seed: c.Seed, Strength: c.Strength, InitImage: init,
				Truncate: true, SkipDecode: true, Edit: Edit{Mask: mask}}
			res, err := p.Generate(context.Background(), req, nil)
			if err != nil {
				t.Fatal(err)
			}
			want, _, err := safetensors.Float32(ref, "pipe/"+name+"/latents")
			if err != nil {
				t.Fatal(err)
			}
			e := fixtures.RelErr(res.Latents, want)
			t.Logf("rel err %.3g", e)
			if e > 1e-3 {
				t.Fatalf("latents differ from diffusers': rel err %g", e)
			}
		})
	}
	for _, p := range pipes {
		p.Close()
	}
}
