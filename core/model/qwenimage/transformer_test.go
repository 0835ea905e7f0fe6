package qwenimage

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/model/qwenimage/qitest"
	"github.com/kiln-project/kiln/core/safetensors"
)

func loadTransformer(t *testing.T, dir string) *Transformer {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseTransformerConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	src, err := safetensors.OpenIndex(filepath.Join(dir, "diffusion_pytorch_model.safetensors.index.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	tr, err := NewTransformer(cpu.New(), cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestTransformerMatchesDiffusers: two configs (2 heads × 16 with axes
// 4/6/6 on an even 4×2 grid; 3 heads × 12 with axes 2/4/6, 3 layers, an
// odd 3×5 grid, two timesteps and a padded text row) give diffusers'
// QwenImageTransformer2DModel output.
func TestTransformerMatchesDiffusers(t *testing.T) {
	refs := qitest.Refs(t)
	for _, tc := range []struct {
		name, dir string
		h, w      int
		mask      bool
	}{
		{"tr_a", filepath.Join(qitest.Dir(), "pipe", "transformer"), 4, 2, false},
		{"tr_b", filepath.Join(qitest.Dir(), "tr_b"), 3, 5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := loadTransformer(t, tc.dir)
			x, _ := qitest.Tensor(t, refs, tc.name+".x")
			ctx, cs := qitest.Tensor(t, refs, tc.name+".ctx")
			ts, _ := qitest.Tensor(t, refs, tc.name+".t")
			want, _ := qitest.Tensor(t, refs, tc.name+".out")
			in := TransformerInput{X: x, H: tc.h, W: tc.w, Context: ctx, T: cs[1], Timesteps: ts}
			if tc.mask {
				in.Mask, _ = qitest.Tensor(t, refs, tc.name+".mask")
			}
			got, err := tr.Forward(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			qitest.Check(t, tc.name, got, want, 1e-4)
		})
	}
}

func TestPackRoundTrip(t *testing.T) {
	x := make([]float32, 2*3*4*6)
	for i := range x {
		x[i] = float32(i)
	}
	p := Pack(x, 2, 3, 4, 6, 2)
	// token (n=0, y=0, x=1), channel 1, dy=1, dx=0 → pixel (c=1, 1, 2)
	if got, want := p[1*12+1*4+2], x[(1*4+1)*6+2]; got != want {
		t.Fatalf("pack: %v, want %v", got, want)
	}
	u := Unpack(p, 2, 3, 4, 6, 2)
	for i := range x {
		if u[i] != x[i] {
			t.Fatalf("unpack(pack) differs at %d", i)
		}
	}
}
