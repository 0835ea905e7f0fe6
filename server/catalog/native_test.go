package catalog

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/checkpoint"
	builtin "github.com/kiln-project/kiln/models"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestNativeFromConfigs(t *testing.T) {
	core := filepath.Join("..", "..", "core", "model")
	sd15 := readFile(t, filepath.Join(core, "unet", "testdata", "sd15_config.json"))
	sd21 := readFile(t, filepath.Join(core, "unet", "testdata", "sd21_config.json"))
	sdVAE := readFile(t, filepath.Join(core, "vae", "testdata", "sd_vae_config.json"))
	v := []byte(`{"prediction_type":"v_prediction"}`)
	eps := []byte(`{"prediction_type":"epsilon"}`)
	for _, c := range []struct {
		name             string
		unet, vae, sched []byte
		w, h, factor     int
		wantErr          bool
	}{
		{name: "SD 1.5", unet: sd15, vae: sdVAE, w: 512, h: 512, factor: 8},
		{name: "SD 2.1 (768-v)", unet: sd21, vae: sdVAE, w: 768, h: 768, factor: 8},
		{name: "pair (height, width)", unet: []byte(`{"sample_size":[64,96]}`), vae: sdVAE, w: 768, h: 512, factor: 8},
		{name: "three-level VAE", unet: []byte(`{"sample_size":16}`), vae: []byte(`{"block_out_channels":[32,64,64]}`), w: 64, h: 64, factor: 4},
		{name: "single file, SD 2.x v-prediction", unet: []byte(`{"sample_size":64,"cross_attention_dim":1024}`), vae: sdVAE, sched: v, w: 768, h: 768, factor: 8},
		{name: "single file, SD 2.x epsilon", unet: []byte(`{"sample_size":64,"cross_attention_dim":1024}`), vae: sdVAE, sched: eps, w: 512, h: 512, factor: 8},
		{name: "single file, SD 1.x", unet: []byte(`{"sample_size":64,"cross_attention_dim":768}`), vae: sdVAE, sched: v, w: 512, h: 512, factor: 8},
		{name: "no sample_size", unet: []byte(`{}`), vae: sdVAE, wantErr: true},
		{name: "bad sample_size", unet: []byte(`{"sample_size":"big"}`), vae: sdVAE, wantErr: true},
		{name: "huge sample_size", unet: []byte(`{"sample_size":100000}`), vae: sdVAE, wantErr: true},
		{name: "no VAE levels", unet: sd15, vae: []byte(`{"block_out_channels":[]}`), wantErr: true},
		{name: "not JSON", unet: []byte(`{`), vae: sdVAE, wantErr: true},
	} {
		n, err := nativeFromConfigs(c.unet, c.vae, c.sched)
		if c.wantErr {
			if err == nil {
				t.Errorf("%s: no error, got %+v", c.name, n)
			}
			continue
		}
		if err != nil || n.width != c.w || n.height != c.h || n.factor != c.factor {
			t.Errorf("%s: %+v %v, want %d×%d factor %d", c.name, n, err, c.w, c.h, c.factor)
		}
	}
}

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
