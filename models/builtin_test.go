package models

import (
	"os"
	"path/filepath"
	"testing"
)

func TestExtractIsCompleteAndIdempotent(t *testing.T) {
	root := t.TempDir()
	dir, err := Extract(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
		"vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "tokenizer/vocab.json",
		"tokenizer/merges.txt", "scheduler/scheduler_config.json", "README.md"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Size() == 0 {
			t.Errorf("%s missing or empty: %v", f, err)
		}
	}
	again, err := Extract(root)
	if err != nil || again != dir {
		t.Fatalf("second extract: %q %v, want %q", again, err, dir)
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 1 {
		t.Errorf("root holds %d entries, want the one model folder", len(entries))
	}
}

func TestBuiltinWithinSizeBudget(t *testing.T) {
	var total int64
	err := filepath.Walk(BuiltinName, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			total += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if total > 24<<20 {
		t.Fatalf("built-in model is %d bytes, over the 24 MB budget", total)
	}
}
