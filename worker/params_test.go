package worker

import (
	"strings"
	"testing"

	"github.com/kiln-project/kiln/server/jobs"
)

func TestParametersListLoRAHashes(t *testing.T) {
	p := jobs.Params{Prompt: "a cat <lora:ink:0.5>", Steps: 20, Model: "m",
		LoRAs:      []jobs.LoRA{{Name: "ink", Weight: 0.5, TextWeight: 0.5, Hash: "0123456789abcdef0123"}, {Name: "px", Hash: "fedcba9876543210"}},
		Embeddings: []jobs.Embedding{{Name: "badhands", Hash: "aaaabbbbccccdddd"}}}
	s := generation(p, 1, 64, 64, "").Parameters().String()
	for _, want := range []string{`Lora hashes: "ink: 0123456789ab, px: fedcba987654"`, `TI hashes: "badhands: aaaabbbbcccc"`} {
		if !strings.Contains(s, want) {
			t.Errorf("parameters %q lack %q", s, want)
		}
	}
	if s := generation(jobs.Params{Prompt: "x"}, 1, 64, 64, "").Parameters().String(); strings.Contains(s, "hashes") {
		t.Errorf("no LoRAs, yet %q", s)
	}
}

// TestParametersHires checks a hires job's PNG parameters: the first
// pass's size (not the image's), the hires denoise and A1111's hires fields.
func TestParametersHires(t *testing.T) {
	p := jobs.Params{Prompt: "x", Steps: 20, Model: "m", Width: 512, Height: 512,
		Hires: &jobs.Hires{Scale: 2, Upscaler: "latent", Steps: 10, Denoise: 0.5}}
	s := generation(p, 1, 1024, 1024, "").Parameters().String()
	for _, want := range []string{"Size: 512x512", "Denoising strength: 0.5", "Hires upscale: 2", "Hires steps: 10", "Hires upscaler: Latent"} {
		if !strings.Contains(s, want) {
			t.Errorf("parameters %q lack %q", s, want)
		}
	}
}
