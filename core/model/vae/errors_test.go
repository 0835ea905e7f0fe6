package vae

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// renamed returns a view of src where each tensor is renamed by rename
// (dropped when it returns "") and optionally reshaped.
func renamed(t *testing.T, src safetensors.Source, rename func(string) (string, []int)) safetensors.Source {
	t.Helper()
	entries := map[string]safetensors.ViewEntry{}
	for _, n := range src.Names() {
		to, shape := rename(n)
		if to != "" {
			entries[to] = safetensors.ViewEntry{From: n, Shape: shape}
		}
	}
	v, err := safetensors.NewView(src, entries)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func openFixture(t *testing.T) (Config, *safetensors.File) {
	t.Helper()
	cfg, path := fixtureConfig(t)
	w, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return cfg, w
}

func TestBadCheckpoints(t *testing.T) {
	cfg, w := openFixture(t)
	noQuant := cfg
	noQuant.UseQuantConv = false
	for _, tc := range []struct {
		name  string
		cfg   Config
		src   safetensors.Source
		wants []string
	}{
		{"missing tensor", cfg, renamed(t, w, func(n string) (string, []int) {
			if n == "decoder.up_blocks.2.resnets.1.conv2.weight" {
				return "", nil
			}
			return n, nil
		}), []string{"missing tensor", "decoder.up_blocks.2.resnets.1.conv2.weight"}},
		{"wrong shape", cfg, renamed(t, w, func(n string) (string, []int) {
			if n == "encoder.conv_out.weight" {
				return n, []int{4, 128, 3, 3}
			}
			return n, nil
		}), []string{"encoder.conv_out.weight", "[4 128 3 3]", "[8 64 3 3]"}},
		{"quant_conv the config does not use", noQuant, w, []string{"unexpected tensor", "quant_conv"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(cpu.New(), tc.cfg, tc.src)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, want := range tc.wants {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

// TestLegacyAttentionNames loads the fixture with the mid-block attention
// stored as older diffusers files and converted original checkpoints do:
// query/key/value/proj_attn, as 1×1 convolution weights.
func TestLegacyAttentionNames(t *testing.T) {
	cfg, w := openFixture(t)
	legacy := map[string]string{"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
	src := renamed(t, w, func(n string) (string, []int) {
		for from, to := range legacy {
			if i := strings.Index(n, ".attentions.0."+from+"."); i >= 0 {
				n = n[:i] + ".attentions.0." + to + n[i+len(".attentions.0.")+len(from):]
				if strings.HasSuffix(n, ".weight") {
					info, _ := w.Info(strings.Replace(n, "."+to+".", "."+from+".", 1))
					return n, append(info.Shape, 1, 1)
				}
				return n, nil
			}
		}
		return n, nil
	})
	if _, ok := src.Info("decoder.mid_block.attentions.0.proj_attn.weight"); !ok {
		t.Fatal("renaming failed")
	}
	m, err := New(cpu.New(), cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := safetensors.Open(fixtures.Require(t, "sd15-tiny/reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	z, zs := refTensor(t, ref, "vae/dec_in")
	want, ws := refTensor(t, ref, "vae/dec_out")
	got, gs, err := m.Decode(context.Background(), z, zs)
	if err != nil {
		t.Fatal(err)
	}
	checkClose(t, "decode with legacy names", got, gs, want, ws, 1e-4)
}

func TestBadInput(t *testing.T) {
	m, _ := loadFixture(t)
	ctx := context.Background()
	if _, _, _, err := m.Encode(ctx, make([]float32, 3*8*8), [4]int{1, 4, 8, 8}); err == nil {
		t.Error("Encode: 4-channel image accepted")
	}
	if _, _, _, err := m.Encode(ctx, make([]float32, 10), [4]int{1, 3, 8, 8}); err == nil {
		t.Error("Encode: short data accepted")
	}
	if _, _, err := m.Decode(ctx, make([]float32, 4*8*8), [4]int{1, 4, 8, 0}); err == nil {
		t.Error("Decode: empty latent accepted")
	}
	if _, _, err := m.DecodeTiled(ctx, make([]float32, 3*8*8), [4]int{1, 3, 8, 8}, TileOptions{}); err == nil {
		t.Error("DecodeTiled: 3-channel latent accepted")
	}
	if _, _, err := m.DecodeTiled(ctx, make([]float32, 4*8*8), [4]int{1, 4, 8, 8}, TileOptions{Tile: -1}); err == nil {
		t.Error("DecodeTiled: negative tile accepted")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := m.Decode(cancelled, make([]float32, 4*8*8), [4]int{1, 4, 8, 8}); !errors.Is(err, context.Canceled) {
		t.Errorf("Decode with cancelled context: %v", err)
	}
	if _, _, err := m.DecodeTiled(cancelled, make([]float32, 4*8*8), [4]int{1, 4, 8, 8}, TileOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("DecodeTiled with cancelled context: %v", err)
	}
	if _, _, _, err := m.Encode(cancelled, make([]float32, 3*8*8), [4]int{1, 3, 8, 8}); !errors.Is(err, context.Canceled) {
		t.Errorf("Encode with cancelled context: %v", err)
	}
}
