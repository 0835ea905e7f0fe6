package imageio

import (
	"reflect"
	"testing"
)

func TestGenerationParametersExactly(t *testing.T) {
	g := Generation{Prompt: "a red circle, (blue:1.2) square", NegativePrompt: "blurry", Steps: 20, Sampler: "dpmpp_2m_karras",
		CFGScale: 7, Seed: 1234, Width: 512, Height: 768, ModelHash: "6ce0161689", Model: "v1-5-pruned-emaonly",
		RNG: "cpu", LoraHashes: map[string]string{"b": "0123456789ab", "a": "ba9876543210"}, Version: "kiln v1.0.0"}
	want := "a red circle, (blue:1.2) square\nNegative prompt: blurry\n" +
		`Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, RNG: CPU, Lora hashes: "a: ba9876543210, b: 0123456789ab", Version: kiln v1.0.0`
	if got := g.Parameters().String(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	back, err := ParseGeneration(want)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, g) {
		t.Fatalf("read back %+v\nwant %+v", back, g)
	}
	// img2img with clip skip; the GPU generator is A1111's default and unwritten.
	g2 := Generation{Prompt: "x", Steps: 4, Sampler: "euler_a", CFGScale: 7.5, Seed: 1, Width: 64, Height: 64, Model: "m",
		DenoisingStrength: 0.5, ClipSkip: 2, RNG: "cuda", Version: "kiln dev"}
	want2 := "x\nSteps: 4, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.5, Seed: 1, Size: 64x64, Model: m, Denoising strength: 0.5, Clip skip: 2, Version: kiln dev"
	if got := g2.Parameters().String(); got != want2 {
		t.Fatalf("got\n%s\nwant\n%s", got, want2)
	}
	if back, err := ParseGeneration(want2); err != nil || !reflect.DeepEqual(back, g2) {
		t.Fatalf("read back %+v, %v", back, err)
	}
	if _, err := ParseGeneration("x\nSteps: many, Sampler: Euler, Seed: 1"); err == nil {
		t.Fatal("malformed Steps accepted")
	}
}

// TestGenerationHires checks the hires fix fields as AUTOMATIC1111 writes
// them (first-pass size, the second pass's denoising strength, Hires
// upscale or Hires resize, steps when set, A1111's upscaler name), read
// back into the same Generation.
func TestGenerationHires(t *testing.T) {
	g := Generation{Prompt: "x", Steps: 20, Sampler: "euler", CFGScale: 7, Seed: 5, Width: 512, Height: 512, Model: "m",
		DenoisingStrength: 0.5, RNG: "cpu", Hires: &Hires{Scale: 2, Steps: 10, Upscaler: "latent"}, Version: "kiln dev"}
	want := "x\nSteps: 20, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 5, Size: 512x512, Model: m, " +
		"Denoising strength: 0.5, Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent, RNG: CPU, Version: kiln dev"
	if got := g.Parameters().String(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if back, err := ParseGeneration(want); err != nil || !reflect.DeepEqual(back, g) {
		t.Fatalf("read back %+v (hires %+v), %v", back, back.Hires, err)
	}
	g.Hires = &Hires{Width: 1024, Height: 768, Upscaler: "lanczos"}
	want = "x\nSteps: 20, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 5, Size: 512x512, Model: m, " +
		"Denoising strength: 0.5, Hires resize: 1024x768, Hires upscaler: Lanczos, RNG: CPU, Version: kiln dev"
	if got := g.Parameters().String(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if back, err := ParseGeneration(want); err != nil || !reflect.DeepEqual(back, g) {
		t.Fatalf("read back %+v (hires %+v), %v", back, back.Hires, err)
	}
	if _, err := ParseGeneration("x\nSteps: 2, Seed: 1, Hires resize: big"); err == nil {
		t.Fatal("malformed Hires resize accepted")
	}
}
