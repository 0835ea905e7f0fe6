package catalog

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/checkpoint"
	builtin "github.com/kiln-project/kiln/models"
)

// TestRegistryNativeSizes: the registry reports the native size of the
// built-in model as a diffusers folder and as single files (with configs
// embedded, and without, where SD 1.x's 512 is inferred).
func TestRegistryNativeSizes(t *testing.T) {
	shapes, err := builtin.Extract(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cm, err := checkpoint.Load(shapes, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cm.Close()
	if err := checkpoint.WriteSingleFile(filepath.Join(dir, "embedded.safetensors"), cm, checkpoint.WriteOptions{EmbedConfigs: true}); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.WriteSingleFile(filepath.Join(dir, "inferred.safetensors"), cm, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(dir, "tokenizer"), os.DirFS(filepath.Join(shapes, "tokenizer"))); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "garbage.safetensors"), []byte("not a checkpoint"), 0o644)
	r := New(map[string]string{"shapes": shapes}, dir, "")
	r.Refresh()
	for name, want := range map[string][3]int{"shapes": {128, 128, 8}, "embedded": {128, 128, 8}, "inferred": {512, 512, 8}, "garbage": {0, 0, 0}} {
		m, ok := r.Get(name)
		if !ok {
			t.Fatalf("%s not listed (problems %v)", name, r.Problems())
		}
		if got := [3]int{m.NativeWidth, m.NativeHeight, m.VAEFactor}; got != want {
			t.Errorf("%s: native %v, want %v", name, got, want)
		}
	}
	v := r.Version()
	r.Refresh() // answered from the cache for single files; nothing changes
	if r.Version() != v {
		t.Fatal("version changed without a change")
	}
}

// TestRegistryFamilies: /v1/models says which family serves each model,
// with its native size (the tiny SDXL fixture: sample_size 16 × factor 4).
func TestRegistryFamilies(t *testing.T) {
	shapes, err := builtin.Extract(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	xl, err := filepath.Abs("../../core/model/sdxl/testdata")
	if err != nil {
		t.Fatal(err)
	}
	r := New(map[string]string{"shapes": shapes, "xl": filepath.Join(xl, "base"), "xl-refiner": filepath.Join(xl, "refiner")}, "", "")
	r.Refresh()
	for name, want := range map[string]string{"shapes": "sd", "xl": "sdxl", "xl-refiner": "sdxl"} {
		m, ok := r.Get(name)
		if !ok {
			t.Fatalf("%s not listed (problems %v)", name, r.Problems())
		}
		if m.Family != want {
			t.Errorf("%s: family %q, want %q", name, m.Family, want)
		}
		if name != "shapes" && (m.NativeWidth != 64 || m.NativeHeight != 64 || m.VAEFactor != 4) {
			t.Errorf("%s: native %d×%d factor %d, want 64×64, 4", name, m.NativeWidth, m.NativeHeight, m.VAEFactor)
		}
	}
}
