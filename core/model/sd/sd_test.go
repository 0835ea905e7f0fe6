package sd

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/tensor"
)

// fp16Backend is a CPU backend that claims fp16 activations, to check that
// the pipeline moves the VAE to a bf16 view on such backends.
type fp16Backend struct {
	backend.Backend
	views *[]tensor.DType
}

func (f fp16Backend) ActivationDType() tensor.DType { return tensor.F16 }

func (f fp16Backend) WithActivationDType(dt tensor.DType) backend.Backend {
	*f.views = append(*f.views, dt)
	return f.Backend
}

func TestVAERunsInBF16OnFP16Backends(t *testing.T) {
	var views []tensor.DType
	if b := codecBackend(fp16Backend{Backend: cpu.New(), views: &views}); b == nil || len(views) != 1 || views[0] != tensor.BF16 {
		t.Fatalf("fp16 backend: VAE views %v, want one bf16 view", views)
	}
	plain := cpu.New()
	if codecBackend(plain) != backend.Backend(plain) {
		t.Fatal("a float32 backend must run the VAE as it is")
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestNativeSize(t *testing.T) {
	core := filepath.Join("..")
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
		w, h, f, err := NativeSize(c.unet, c.vae, c.sched)
		if c.wantErr {
			if err == nil {
				t.Errorf("%s: no error, got %d×%d factor %d", c.name, w, h, f)
			}
			continue
		}
		if err != nil || w != c.w || h != c.h || f != c.factor {
			t.Errorf("%s: %d×%d factor %d %v, want %d×%d factor %d", c.name, w, h, f, err, c.w, c.h, c.factor)
		}
	}
}
