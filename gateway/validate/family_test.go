package validate

import (
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/config"
)

// TestFamilyDefaults: a Qwen-Image model (the tiny fixture folder) is
// listed as family qwen-image, and its jobs default to the family's
// steps (within the profile's limit) and true-CFG scale, with no sampler
// (the family samples with its own loop); naming another sampler is
// refused.
func TestFamilyDefaults(t *testing.T) {
	dir, err := filepath.Abs(filepath.Join("..", "..", "core", "model", "qwenimage", "testdata", "pipe"))
	if err != nil {
		t.Fatal(err)
	}
	reg := catalog.New(map[string]string{"qwen": dir}, "", "qwen")
	reg.Refresh()
	m, ok := reg.Get("qwen")
	if !ok {
		t.Fatalf("qwen not listed: %v", reg.Problems())
	}
	if m.Family != "qwen-image" || m.NativeWidth != 1328 || m.DefaultSteps != 50 || m.DefaultGuidance != 4 || m.Sampler != "flowmatch_euler" {
		t.Fatalf("catalog entry %+v", m)
	}
	profiles, err := config.Profiles()
	if err != nil {
		t.Fatal(err)
	}
	v, err := New(reg, profiles, "balanced", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	p, perr := v.Plan(principal(1, 200), &JobRequest{Prompt: "x"}, false)
	if perr != nil {
		t.Fatal(perr)
	}
	if want := min(50, profiles["balanced"].MaxSteps); p.Steps != want || p.Guidance != 4 || p.Sampler != "" {
		t.Fatalf("plan %+v, want %d steps, guidance 4, no sampler", p, want)
	}
	if p, perr = v.Plan(principal(1, 200), &JobRequest{Prompt: "x", Steps: intp(8)}, false); perr != nil || p.Steps != 8 {
		t.Fatalf("explicit steps: %+v %v", p, perr)
	}
	if _, perr := v.Plan(principal(1, 200), &JobRequest{Prompt: "x", Sampler: "euler"}, false); perr == nil {
		t.Fatal("a sampler was accepted for a family with its own loop")
	}
}
