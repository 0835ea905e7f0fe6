package family

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
)

// fake claims one pipeline class or single files with one tensor prefix.
type fake struct {
	name, class, prefix string
}

func (f fake) Name() string { return f.name }
func (f fake) Claims(sig Signature) bool {
	if sig.PipelineClass != "" {
		return sig.PipelineClass == f.class
	}
	return sig.HasPrefix(f.prefix)
}
func (f fake) Open(path string, _ OpenOptions) (Checkpoint, error) {
	return nil, errors.New("opened by " + f.name)
}
func (f fake) Inspect(string) (Defaults, error) { return Defaults{Width: len(f.name)}, nil }

func folder(t *testing.T, class string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "model_index.json"), []byte(`{"_class_name":"`+class+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func single(t *testing.T, names ...string) string {
	t.Helper()
	var ts []safetensors.WriteTensor
	for _, n := range names {
		ts = append(ts, safetensors.F32Tensor(n, []int{1}, []float32{1}))
	}
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := safetensors.WriteFile(path, ts, nil); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRegistryPicksTheClaimingFamily(t *testing.T) {
	r := Registry{fake{"xl", "XLPipeline", "conditioner."}, fake{"base", "BasePipeline", "model."}}
	for _, c := range []struct {
		path, want string
	}{
		{folder(t, "XLPipeline"), "xl"},
		{folder(t, "BasePipeline"), "base"},
		{single(t, "conditioner.a", "model.b"), "xl"}, // first claim wins
		{single(t, "model.b"), "base"},
	} {
		f, err := r.Find(c.path)
		if err != nil || f.Name() != c.want {
			t.Fatalf("%s: family %v (%v), want %s", c.path, f, err, c.want)
		}
		if _, err := r.Open(c.path, OpenOptions{}); err == nil || err.Error() != "opened by "+c.want {
			t.Fatalf("%s: Open went to %v, want %s", c.path, err, c.want)
		}
		if d, err := r.Inspect(c.path); err != nil || d.Width != len(c.want) {
			t.Fatalf("%s: Inspect %+v %v", c.path, d, err)
		}
	}
}

func TestRegistryRefusesWhatNoFamilyClaims(t *testing.T) {
	r := Registry{fake{"base", "BasePipeline", "model."}}
	pickle := filepath.Join(t.TempDir(), "m.ckpt")
	os.WriteFile(pickle, []byte("x"), 0o644)
	for path, want := range map[string]string{
		folder(t, "VideoPipeline"):                 `pipeline "VideoPipeline" is not supported (families: base)`,
		single(t, "other.x"):                       "no model family recognises this single file",
		pickle:                                     "pickle",
		filepath.Join(t.TempDir(), "missing"):      "no such file",
		folder(t, ""):                              "missing _class_name",
		filepath.Join(t.TempDir(), "m.gguf") + "/": "no such file",
	} {
		_, err := r.Find(path)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error containing %q", path, err, want)
		}
	}
}
