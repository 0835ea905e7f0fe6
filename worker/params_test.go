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
