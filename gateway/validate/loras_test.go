package validate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/server/loralib"
)

func installFile(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	err := safetensors.WriteFile(path, []safetensors.WriteTensor{safetensors.F32Tensor("emb_params", []int{1, 2}, []float32{float32(len(path)), 1})}, nil)
	if err != nil {
		t.Fatal(err)
	}
}

func TestLoRAsResolved(t *testing.T) {
	v, reg, dir := setup(t)
	installFile(t, filepath.Join(dir, "loras", "pixel_art.safetensors"))
	installFile(t, filepath.Join(dir, "loras", "ink.safetensors"))
	installFile(t, filepath.Join(dir, "embeddings", "badhands.safetensors"))
	reg.Refresh()
	if _, ok := reg.Get("loras"); ok {
		t.Fatal("the loras folder is listed as a model")
	}
	lib := loralib.New(dir)
	v.SetLibrary(lib)
	w := 0.5
	p, err := v.Plan(principal(1, 60), &JobRequest{Prompt: "a cat <lora:pixel_art:0.8:0.3>", NegativePrompt: "BadHands, blurry",
		LoRAs: []LoRARequest{{Name: "ink", Weight: &w}}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.LoRAs) != 2 || p.LoRAs[0].Name != "pixel_art" || p.LoRAs[0].Weight != 0.8 || p.LoRAs[0].TextWeight != 0.3 ||
		p.LoRAs[1].Name != "ink" || p.LoRAs[1].TextWeight != 0.5 || len(p.LoRAs[0].Hash) != 64 {
		t.Fatalf("loras %+v", p.LoRAs)
	}
	if len(p.Embeddings) != 1 || p.Embeddings[0].Name != "badhands" {
		t.Fatalf("embeddings %+v", p.Embeddings)
	}
	if p.Prompt != "a cat <lora:pixel_art:0.8:0.3>" {
		t.Errorf("the job keeps the prompt as sent, got %q", p.Prompt)
	}
	// unknown names: 400 with close matches
	_, aerr := v.Plan(principal(1, 60), &JobRequest{Prompt: "x <lora:pixelart:1>"}, false)
	if aerr == nil || aerr.Status != 400 || !strings.Contains(aerr.Message, "pixel_art") {
		t.Fatalf("unknown: %+v", aerr)
	}
	for _, bad := range []*JobRequest{
		{Prompt: "x <lora:ink:heavy>"},
		{Prompt: "x", LoRAs: []LoRARequest{{Name: ""}}},
		{Prompt: "x", NegativePrompt: "<lora:ink:1>"},
		{Prompt: "x <lora:ink:11>"},
	} {
		if _, aerr := v.Plan(principal(1, 60), bad, false); aerr == nil || aerr.Status != 400 {
			t.Errorf("%+v: %+v", bad, aerr)
		}
	}
	var u *loralib.UnknownError
	if _, err := lib.Find(loralib.LoRAs, "nope"); !errors.As(err, &u) {
		t.Fatal(err)
	}
}
