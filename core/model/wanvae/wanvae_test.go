package wanvae

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/model/qwenimage/qitest"
	"github.com/kiln-project/kiln/core/safetensors"
)

func load(t *testing.T, dir string) *Model {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(filepath.Join(dir, "diffusion_pytorch_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m, err := New(cpu.New(), cfg, f)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func shape4(s []int) [4]int { return [4]int{s[0], s[1], s[3], s[4]} } // (N, C, 1, H, W)

// TestSingleFrameMatchesDiffusers: encode (posterior mean, log-variance)
// and decode (raw and clamped) of one frame through two configs (base 8,
// dim_mult 1/2/4/4, 1 res block, z 4, factor 8; base 4, dim_mult 1/2/2,
// 2 res blocks, z 8, factor 4) match AutoencoderKLQwenImage.
func TestSingleFrameMatchesDiffusers(t *testing.T) {
	refs := qitest.Refs(t)
	for name, dir := range map[string]string{
		"vae_a": filepath.Join(qitest.Dir(), "pipe", "vae"),
		"vae_b": filepath.Join(qitest.Dir(), "vae_b"),
	} {
		t.Run(name, func(t *testing.T) {
			m := load(t, dir)
			img, is := qitest.Tensor(t, refs, name+".img")
			mean, lv, _, err := m.Encode(context.Background(), img, shape4(is))
			if err != nil {
				t.Fatal(err)
			}
			wantMean, _ := qitest.Tensor(t, refs, name+".enc_mean")
			wantLV, _ := qitest.Tensor(t, refs, name+".enc_logvar")
			qitest.Check(t, "mean", mean, wantMean, 1e-4)
			qitest.Check(t, "logvar", lv, wantLV, 1e-4)
			z, zs := qitest.Tensor(t, refs, name+".z")
			raw, _, err := m.Decode(context.Background(), z, shape4(zs), false)
			if err != nil {
				t.Fatal(err)
			}
			wantRaw, _ := qitest.Tensor(t, refs, name+".dec_preclamp")
			qitest.Check(t, "decode (raw)", raw, wantRaw, 1e-4)
			dec, _, err := m.Decode(context.Background(), z, shape4(zs), true)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := qitest.Tensor(t, refs, name+".dec")
			qitest.Check(t, "decode", dec, want, 1e-4)
		})
	}
}
