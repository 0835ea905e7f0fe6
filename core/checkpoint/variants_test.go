package checkpoint

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// toF16 converts every tensor of a source to F16 write tensors.
func toF16(t *testing.T, src safetensors.Source) []safetensors.WriteTensor {
	t.Helper()
	var out []safetensors.WriteTensor
	for _, n := range src.Names() {
		v, shape, err := safetensors.Float32(src, n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, safetensors.F16Tensor(n, shape, v))
	}
	return out
}

// writeSharded writes tensors as two shards plus an index named like
// diffusers/transformers name them.
func writeSharded(t *testing.T, dir, base, variant string, ts []safetensors.WriteTensor) {
	t.Helper()
	half := len(ts) / 2
	weightMap := map[string]string{}
	stem := base
	if variant != "" {
		stem += "." + variant
	}
	for i, part := range [][]safetensors.WriteTensor{ts[:half], ts[half:]} {
		name := fmt.Sprintf("%s-%05d-of-00002.safetensors", stem, i+1)
		if err := safetensors.WriteFile(filepath.Join(dir, name), part, nil); err != nil {
			t.Fatal(err)
		}
		for _, wt := range part {
			weightMap[wt.Name] = name
		}
	}
	index := base + ".safetensors.index.json"
	if variant != "" {
		index = base + ".safetensors.index." + variant + ".json"
	}
	js, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 1}, "weight_map": weightMap})
	if err := os.WriteFile(filepath.Join(dir, index), js, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDiffusersVariantsAndShards loads a folder whose UNet comes only as
// an fp16 variant file, whose VAE is sharded, and whose text encoder is a
// sharded fp16 variant beside full-precision weights.
func TestDiffusersVariantsAndShards(t *testing.T) {
	ref := loadFixture(t)
	dir := copyTree(t, fixtures.Require(t, "sd15-tiny/model"))
	// unet: fp16 variant only
	unetF16 := toF16(t, ref.UNet)
	if err := safetensors.WriteFile(filepath.Join(dir, "unet", "diffusion_pytorch_model.fp16.safetensors"), unetF16, nil); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "unet", "diffusion_pytorch_model.safetensors"))
	// vae: sharded, full precision
	var vaeTs []safetensors.WriteTensor
	for _, n := range ref.VAE.Names() {
		wt, _ := safetensors.FromSource(ref.VAE, n, n)
		vaeTs = append(vaeTs, wt)
	}
	os.Remove(filepath.Join(dir, "vae", "diffusion_pytorch_model.safetensors"))
	writeSharded(t, filepath.Join(dir, "vae"), "diffusion_pytorch_model", "", vaeTs)
	// text encoder: plain file kept, plus a sharded fp16 variant with the
	// transformers "text_model." prefix
	var teF16 []safetensors.WriteTensor
	for _, wt := range toF16(t, ref.TextEncoder) {
		wt.Name = "text_model." + wt.Name
		teF16 = append(teF16, wt)
	}
	writeSharded(t, filepath.Join(dir, "text_encoder"), "model", "fp16", teF16)

	for _, variant := range []string{"", "fp16"} {
		t.Run("variant="+variant, func(t *testing.T) {
			m, err := Load(dir, Options{Variant: variant})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if info, _ := m.UNet.Info("conv_in.weight"); info.DType != "F16" {
				t.Fatalf("unet conv_in dtype %s, want the fp16 variant", info.DType)
			}
			sameTensors(t, "vae", m.VAE, ref.VAE)
			wantTE := "F32"
			if variant == "fp16" {
				wantTE = "F16"
			}
			if info, _ := m.TextEncoder.Info("encoder.layers.0.mlp.fc1.weight"); info.DType != wantTE {
				t.Fatalf("text encoder dtype %s, want %s", info.DType, wantTE)
			}
			if len(m.TextEncoder.Names()) != len(ref.TextEncoder.Names()) {
				t.Fatalf("text encoder names %d", len(m.TextEncoder.Names()))
			}
			got, _, err := safetensors.Float32(m.UNet, "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight")
			if err != nil {
				t.Fatal(err)
			}
			want, _, _ := safetensors.Float32(ref.UNet, "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight")
			for i := range want {
				if r := safetensors.Float16ToFloat32(safetensors.Float32ToFloat16(want[i])); got[i] != r {
					t.Fatalf("fp16 weight %d: %v, want %v", i, got[i], r)
				}
			}
		})
	}
}

// TestWriteSingleFileF16 writes the fixture as an fp16 single file and
// loads it back with the tensors in F16 and the values rounded.
func TestWriteSingleFileF16(t *testing.T) {
	ref := loadFixture(t)
	p := filepath.Join(t.TempDir(), "half.safetensors")
	if err := WriteSingleFile(p, ref, WriteOptions{DType: "F16", EmbedConfigs: true}); err != nil {
		t.Fatal(err)
	}
	m, err := Load(p, Options{TokenizerDir: ref.TokenizerDir, Prediction: "v_prediction"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var sched map[string]any
	json.Unmarshal(m.SchedulerConfig, &sched)
	if sched["prediction_type"] != "v_prediction" {
		t.Fatalf("prediction option ignored: %v", sched["prediction_type"])
	}
	for _, c := range []struct {
		got, want safetensors.Source
	}{{m.UNet, ref.UNet}, {m.VAE, ref.VAE}, {m.TextEncoder, ref.TextEncoder}} {
		for _, n := range c.want.Names() {
			info, _ := c.got.Info(n)
			if info.DType != "F16" {
				t.Fatalf("%s: dtype %s", n, info.DType)
			}
			g, gs, err := safetensors.Float32(c.got, n)
			if err != nil {
				t.Fatal(err)
			}
			w, ws, _ := safetensors.Float32(c.want, n)
			if fmt.Sprint(gs) != fmt.Sprint(ws) {
				t.Fatalf("%s: shape %v, want %v", n, gs, ws)
			}
			for i := range w {
				if r := safetensors.Float16ToFloat32(safetensors.Float32ToFloat16(w[i])); g[i] != r {
					t.Fatalf("%s[%d] = %v, want %v", n, i, g[i], r)
				}
			}
		}
	}
	if err := WriteSingleFile(p, ref, WriteOptions{DType: "F8"}); err == nil {
		t.Fatal("unknown dtype accepted")
	}
}
