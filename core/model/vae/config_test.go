package vae

import (
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
)

func readConfig(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPublishedArchitecture derives the SD VAE from its config and checks
// the parameter count it is known to have and its defaults.
func TestPublishedArchitecture(t *testing.T) {
	cfg, err := ParseConfig(readConfig(t, "testdata/sd_vae_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Factor() != 8 || cfg.ScalingFactor != 0.18215 || cfg.ShiftFactor != 0 || !cfg.ForceUpcast ||
		!cfg.UseQuantConv || !cfg.UsePostQuantConv || !cfg.MidBlockAttention {
		t.Fatalf("parsed %+v", cfg)
	}
	infos, err := ExpectedTensors(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, in := range infos {
		n += int64(in.Numel())
	}
	if n != 83_653_863 {
		t.Fatalf("%d parameters, want 83653863", n)
	}
}

func mutate(t *testing.T, field, v string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(readConfig(t, "testdata/sd_vae_config.json"), &m); err != nil {
		t.Fatal(err)
	}
	if v == "" {
		delete(m, field)
	} else {
		m[field] = json.RawMessage(v)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConfigRejects(t *testing.T) {
	for _, tc := range []struct{ field, value string }{
		{"norm_type", `"spatial"`},
		{"_class_name", `"AutoencoderTiny"`},
		{"act_fn", `"relu"`},
		{"down_block_types", `["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"]`},
		{"up_block_types", `["UpDecoderBlock2D"]`},
		{"block_out_channels", "[]"},
		{"block_out_channels", "[128, 256, 512, 500]"},
		{"layers_per_block", "0"},
		{"latent_channels", "-1"},
		{"scaling_factor", "0"},
		{"scaling_factor", "null"},
		{"latents_mean", "[0, 0, 0, 0]"},
		{"latents_std", "[1, 1, 1]"},
		{"use_quant_conv", `"yes"`},
	} {
		_, err := ParseConfig(mutate(t, tc.field, tc.value))
		if err == nil {
			t.Errorf("%s = %s: accepted", tc.field, tc.value)
			continue
		}
		if !strings.Contains(err.Error(), `"`+tc.field+`"`) {
			t.Errorf("%s = %s: error %q does not name the field", tc.field, tc.value, err)
		}
	}
}

func TestLatentNormalization(t *testing.T) {
	b := mutate(t, "shift_factor", "0.1159")
	cfg, err := ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	x := []float32{1, -2, 0.5, 3}
	z := append([]float32(nil), x...)
	if err := cfg.Normalize(z, [4]int{1, 4, 1, 1}); err != nil {
		t.Fatal(err)
	}
	if want := float32((1 - 0.1159) * 0.18215); math.Abs(float64(z[0]-want)) > 1e-7 {
		t.Fatalf("Normalize: %v, want %v", z[0], want)
	}
	if err := cfg.Denormalize(z, [4]int{1, 4, 1, 1}); err != nil {
		t.Fatal(err)
	}
	for i := range x {
		if math.Abs(float64(z[i]-x[i])) > 1e-6 {
			t.Fatalf("round trip %v → %v", x, z)
		}
	}

	var m map[string]json.RawMessage
	json.Unmarshal(b, &m)
	m["latents_mean"] = json.RawMessage("[0.5, 0, 0, 0]")
	m["latents_std"] = json.RawMessage("[2, 1, 1, 1]")
	b, _ = json.Marshal(m)
	cfg, err = ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	z = []float32{1.5, 1, 1, 1}
	cfg.Normalize(z, [4]int{1, 4, 1, 1})
	if want := float32((1.5 - 0.5) * 0.18215 / 2); math.Abs(float64(z[0]-want)) > 1e-7 {
		t.Fatalf("Normalize with latents_mean/std: %v, want %v", z[0], want)
	}
	if err := cfg.Normalize(z, [4]int{1, 3, 1, 1}); err == nil {
		t.Fatal("wrong channel count accepted")
	}
}

// FuzzParseConfig checks that no config makes ParseConfig or the
// architecture derivation panic.
func FuzzParseConfig(f *testing.F) {
	f.Add(readConfig(f, "testdata/sd_vae_config.json"))
	f.Add([]byte(`{"block_out_channels": [32, 64, 64], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"], "latents_mean": [0, 0, 0, 0], "latents_std": [1, 1, 1, 1], "shift_factor": 0.1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if _, err := ExpectedTensors(cfg); err != nil {
			t.Fatalf("ParseConfig accepted a config that ExpectedTensors refuses: %v", err)
		}
	})
}
