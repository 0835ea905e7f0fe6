package loralib

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
)

func write(t *testing.T, path string, v float32) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := safetensors.WriteFile(path, []safetensors.WriteTensor{safetensors.F32Tensor("emb_params", []int{1, 2}, []float32{v, v})}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestLibrary(t *testing.T) {
	dir := t.TempDir()
	l := New(dir)
	if es, err := l.List(LoRAs); err != nil || len(es) != 0 {
		t.Fatalf("empty: %v %v", es, err)
	}
	write(t, filepath.Join(dir, "loras", "pixel_art.safetensors"), 1)
	write(t, filepath.Join(dir, "loras", "watercolor.safetensors"), 2)
	if err := os.WriteFile(filepath.Join(dir, "loras", "old.pt"), []byte("pickle"), 0o644); err != nil {
		t.Fatal(err)
	}
	es, err := l.List(LoRAs)
	if err != nil || len(es) != 2 || es[0].Name != "pixel_art" || len(es[0].Hash) != 64 || es[0].Hash == es[1].Hash {
		t.Fatalf("list: %+v %v", es, err)
	}
	// hot-added
	write(t, filepath.Join(dir, "loras", "ink.safetensors"), 3)
	if e, err := l.Find(LoRAs, "ink"); err != nil || e.ShortHash() != e.Hash[:12] {
		t.Fatalf("find hot-added: %+v %v", e, err)
	}
	var u *UnknownError
	if _, err := l.Find(LoRAs, "pixelart"); !errors.As(err, &u) || len(u.Close) == 0 || u.Close[0] != "pixel_art" {
		t.Fatalf("unknown: %v", err)
	}
	if _, err := l.Find(LoRAs, "old"); err == nil || !strings.Contains(err.Error(), "convert it to .safetensors") {
		t.Fatalf("pickle: %v", err)
	}
	if _, err := l.Find(Embeddings, "ink"); !errors.As(err, &u) {
		t.Fatalf("kinds are separate: %v", err)
	}
}
