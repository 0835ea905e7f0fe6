package unet

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// sdxlTestdata is the committed tiny SDXL fixture folder.
const sdxlTestdata = "../sdxl/testdata"

func openSDXL(t *testing.T, model string) (*Model, *safetensors.File) {
	t.Helper()
	js, err := os.ReadFile(filepath.Join(sdxlTestdata, model, "unet/config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(js)
	if err != nil {
		t.Fatal(err)
	}
	w, err := safetensors.Open(filepath.Join(sdxlTestdata, model, "unet/diffusion_pytorch_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	m, err := New(cpu.New(), cfg, w)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := safetensors.Open(filepath.Join(sdxlTestdata, "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ref.Close() })
	return m, ref
}

// TestSDXLFixtureForward checks the SDXL UNets (text_time added embedding,
// per-level transformer depth and heads, linear projections; the base with
// 6 time ids, the refiner with 5) against diffusers, on an even and an odd
// latent size.
func TestSDXLFixtureForward(t *testing.T) {
	for _, tc := range []struct{ model, key string }{{"base", "unet"}, {"refiner", "refiner"}} {
		t.Run(tc.model, func(t *testing.T) {
			m, ref := openSDXL(t, tc.model)
			ctxv, cshape := refTensor(t, ref, tc.key+"/in_context")
			added := &Added{}
			added.TextEmbeds, _ = refTensor(t, ref, tc.key+"/in_text_embeds")
			added.TimeIDs, _ = refTensor(t, ref, tc.key+"/in_time_ids")
			ts, _ := refTensor(t, ref, tc.key+"/in_timesteps")
			for _, c := range []struct {
				in, want string
				ts       []float32
			}{{"in_sample", "out", ts}, {"in_sample_odd", "out_odd", []float32{250}}} {
				x, xs := refTensor(t, ref, tc.key+"/"+c.in)
				got, err := m.ForwardAdded(context.Background(), x, [4]int{xs[0], xs[1], xs[2], xs[3]}, c.ts, ctxv, cshape[1], added)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := refTensor(t, ref, tc.key+"/"+c.want)
				if e := fixtures.RelErr(got, want); e > 1e-4 {
					t.Fatalf("%s: relative error %.3g > 1e-4", c.want, e)
				} else {
					t.Logf("%s: relative error %.3g", c.want, e)
				}
			}
			n, err := m.cfg.TimeIDCount(len(added.TextEmbeds) / 2)
			if err != nil || n != len(added.TimeIDs)/2 {
				t.Fatalf("TimeIDCount = %d, %v; want %d", n, err, len(added.TimeIDs)/2)
			}
		})
	}
}

// TestSDXLAddedConditioningErrors: the added conditioning is required by a
// text_time model, refused by others, and checked against the config.
func TestSDXLAddedConditioningErrors(t *testing.T) {
	m, ref := openSDXL(t, "base")
	x, xs := refTensor(t, ref, "unet/in_sample")
	ctxv, cshape := refTensor(t, ref, "unet/in_context")
	te, _ := refTensor(t, ref, "unet/in_text_embeds")
	ids, _ := refTensor(t, ref, "unet/in_time_ids")
	shape := [4]int{xs[0], xs[1], xs[2], xs[3]}
	for _, c := range []struct {
		name  string
		added *Added
		want  string
	}{
		{"missing", nil, "needs pooled text embeddings"},
		{"refiner's 5 ids", &Added{TextEmbeds: te, TimeIDs: ids[:10]}, "projection_class_embeddings_input_dim"},
		{"ragged", &Added{TextEmbeds: te[:len(te)-1], TimeIDs: ids}, "do not split"},
	} {
		_, err := m.ForwardAdded(context.Background(), x, shape, []float32{1}, ctxv, cshape[1], c.added)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
	}
	t.Run("SD 1.x model refuses added conditioning", func(t *testing.T) {
		sd, _ := loadFixture(t)
		if _, err := sd.ForwardAdded(context.Background(), make([]float32, 2*4*16*16), [4]int{2, 4, 16, 16}, []float32{1}, make([]float32, 2*77*32), 77, &Added{TextEmbeds: te, TimeIDs: ids}); err == nil || !strings.Contains(err.Error(), "no addition_embed_type") {
			t.Errorf("error %v", err)
		}
	})
}
