package families

import (
	"testing"

	"github.com/kiln-project/kiln/core/checkpoint"
	"github.com/kiln-project/kiln/core/family"
	builtin "github.com/kiln-project/kiln/models"
)

// The built-in model (an SD-architecture diffusers folder) is served by
// the SD family, and its defaults come through the registry.
func TestBuiltinModelIsSD(t *testing.T) {
	dir, err := builtin.Extract(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := All().Find(dir)
	if err != nil || f.Name() != "sd" {
		t.Fatalf("family %v (%v), want sd", f, err)
	}
	d, err := All().Inspect(dir)
	if err != nil || d.Width != 128 || d.Height != 128 || d.Factor != 8 || d.LatentChannels != 4 || d.ContextDim < 1 {
		t.Fatalf("defaults %+v (%v)", d, err)
	}
	cp, err := All().Open(dir, family.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	if got := cp.Defaults(); got.Width != d.Width || got.Factor != d.Factor || len(cp.Components()) != 3 {
		t.Fatalf("opened defaults %+v, %d components", got, len(cp.Components()))
	}
}

// TestFromCheckpoint: an in-memory checkpoint goes to the family its
// Family field names.
func TestFromCheckpoint(t *testing.T) {
	m, err := checkpoint.Load("../sdxl/testdata/base", checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := FromCheckpoint(m)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	if d := cp.Defaults(); d.ContextDim != 24+32 || !d.ZeroEmptyNegative || d.Width != 64 {
		t.Errorf("defaults %+v", d)
	}
	if _, err := FromCheckpoint(&checkpoint.Model{Family: "flux"}); err == nil {
		t.Error("unknown family accepted")
	}
}
