package models

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRegistry(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "diff", "unet"), 0o755)
	os.WriteFile(filepath.Join(dir, "diff", "model_index.json"), []byte("{}"), 0o644)
	os.WriteFile(filepath.Join(dir, "diff", "unet", "w.safetensors"), make([]byte, 100), 0o644)
	os.WriteFile(filepath.Join(dir, "single.safetensors"), make([]byte, 50), 0o644)
	os.MkdirAll(filepath.Join(dir, "notamodel"), 0o755)
	os.WriteFile(filepath.Join(dir, "readme.txt"), []byte("x"), 0o644)
	r := New(map[string]string{"explicit": filepath.Join(dir, "single.safetensors"), "missing": "/nope"}, dir, "single")
	r.Refresh()
	list := r.List()
	names := []string{}
	for _, m := range list {
		names = append(names, m.Name)
	}
	if len(list) != 3 || names[0] != "diff" || names[1] != "explicit" || names[2] != "single" {
		t.Fatalf("models %v (problems %v)", names, r.Problems())
	}
	if m, _ := r.Get("diff"); m.Format != "diffusers" || m.Bytes != 100 {
		t.Fatalf("diff %+v", m)
	}
	if m, _ := r.Get("single"); m.Format != "single-file" || m.Bytes != 50 {
		t.Fatalf("single %+v", m)
	}
	if len(r.Problems()) != 2 { // missing path, folder without model_index.json
		t.Fatalf("problems %v", r.Problems())
	}
	if r.Default() != "single" {
		t.Fatalf("default %s", r.Default())
	}
	v := r.Version()
	r.Refresh()
	if r.Version() != v {
		t.Fatal("version changed without a change")
	}
	os.Remove(filepath.Join(dir, "single.safetensors"))
	r.Refresh()
	if r.Version() == v || r.Default() != "diff" {
		t.Fatalf("after removal: version %d default %s", r.Version(), r.Default())
	}
}
