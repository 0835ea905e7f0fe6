package catalog

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

func TestBuiltinModelIsTheDefault(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(p, 0o755)
		os.WriteFile(filepath.Join(p, "model_index.json"), []byte("{}"), 0o644)
		return p
	}
	builtin, other := mk("shapes"), mk("aaa")
	r := New(map[string]string{"aaa": other}, "", "")
	r.SetBuiltin("kiln-shapes", builtin)
	r.Refresh()
	if r.Default() != "kiln-shapes" {
		t.Fatalf("default %q, want the built-in model", r.Default())
	}
	if m, ok := r.Get("kiln-shapes"); !ok || !m.Builtin || m.Path != builtin {
		t.Fatalf("built-in model %+v %v", m, ok)
	}
	if m, _ := r.Get("aaa"); m.Builtin {
		t.Fatal("a configured model is marked built-in")
	}
	// A configured default wins over the built-in model.
	r = New(map[string]string{"aaa": other}, "", "aaa")
	r.SetBuiltin("kiln-shapes", builtin)
	r.Refresh()
	if r.Default() != "aaa" || len(r.List()) != 2 {
		t.Fatalf("default %q, models %v", r.Default(), r.List())
	}
	// A configured model of the same name replaces the built-in one.
	r = New(map[string]string{"kiln-shapes": other}, "", "")
	r.SetBuiltin("kiln-shapes", builtin)
	r.Refresh()
	if m, _ := r.Get("kiln-shapes"); m.Builtin || m.Path != other {
		t.Fatalf("configured kiln-shapes %+v", m)
	}
	// A built-in model that cannot be read is a problem, not a crash.
	r = New(nil, "", "")
	r.SetBuiltin("kiln-shapes", filepath.Join(dir, "missing"))
	r.Refresh()
	if len(r.List()) != 0 || len(r.Problems()) != 1 || r.Default() != "" {
		t.Fatalf("models %v problems %v", r.List(), r.Problems())
	}
}

// TestSyntheticModels: synthetic:NAME paths are served only when enabled,
// with the architecture's native size; unknown names are problems.
func TestSyntheticModels(t *testing.T) {
	explicit := map[string]string{"bench": "synthetic:sd15", "big": "synthetic:sd15@768", "bad": "synthetic:sdxl9"}
	r := New(explicit, "", "bench")
	r.Refresh()
	if _, ok := r.Get("bench"); ok || len(r.Problems()) != 3 {
		t.Fatalf("synthetic models served without being enabled: problems %v", r.Problems())
	}
	r = New(explicit, "", "bench")
	r.AllowSynthetic(true)
	r.Refresh()
	m, ok := r.Get("bench")
	big, ok2 := r.Get("big")
	if !ok || !ok2 || m.Format != "synthetic" || m.NativeWidth != 512 || big.NativeHeight != 768 || m.Bytes <= 0 {
		t.Fatalf("synthetic models: %+v %+v", m, big)
	}
	if _, ok := r.Get("bad"); ok || len(r.Problems()) != 1 {
		t.Fatalf("unknown synthetic architecture: problems %v", r.Problems())
	}
}
