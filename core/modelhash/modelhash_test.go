package modelhash

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSingleFileIsSHA256Prefix(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.safetensors")
	data := []byte("not really weights, but hashed all the same")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	var c Cache
	got, err := c.Short(context.Background(), p)
	if err != nil || got != hex.EncodeToString(sum[:])[:10] {
		t.Fatalf("Short = %q, %v; want %s", got, err, hex.EncodeToString(sum[:])[:10])
	}
	// A changed file gets a new hash, not the cached one.
	if err := os.WriteFile(p, append(data, '!'), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.Chtimes(p, time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	again, err := c.Short(context.Background(), p)
	if err != nil || again == got {
		t.Fatalf("after a change: %q, %v (was %q)", again, err, got)
	}
}

func TestFolderCoversItsWeights(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, s string) {
		p := filepath.Join(dir, rel)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("unet/diffusion_pytorch_model.safetensors", "u")
	write("vae/diffusion_pytorch_model.safetensors", "v")
	write("model_index.json", "{}")
	var c Cache
	a, err := c.Full(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	write("model_index.json", `{"changed": true}`) // not weights
	var c2 Cache
	if b, _ := c2.Full(context.Background(), dir); b != a {
		t.Fatalf("a non-weight file changed the hash")
	}
	write("vae/diffusion_pytorch_model.safetensors", "w")
	var c3 Cache
	if b, _ := c3.Full(context.Background(), dir); b == a {
		t.Fatalf("a weight change kept the hash")
	}
	if _, err := c3.Full(context.Background(), t.TempDir()); err == nil {
		t.Fatal("an empty folder hashed")
	}
}
