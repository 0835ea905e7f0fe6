package sdxl

import (
	"context"
	"testing"

	"github.com/kiln-project/kiln/core/conditioning"
	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// TestEmbeddingInjection builds an SDXL embedding (clip_l, clip_g) whose
// vectors are the token embeddings of "red" in each encoder: a prompt
// naming it encodes exactly like the prompt with "red" (both encoders'
// states and the pooled output), and the refiner, which has only the
// second encoder, takes the same file.
func TestEmbeddingInjection(t *testing.T) {
	for _, name := range []string{"base", "refiner"} {
		m, _ := open(t, name, false)
		var ts []safetensors.WriteTensor
		for _, enc := range []struct {
			key string
			te  interface {
				TokenEmbedding(int32) ([]float32, error)
			}
			ok bool
		}{{"clip_l", m.te1, m.te1 != nil}, {"clip_g", m.te2, true}} {
			tok := m.tok2
			if enc.key == "clip_l" {
				tok = m.tok1
			}
			var v []float32
			if enc.ok {
				ids := tok.Encode("red")
				if len(ids) != 1 {
					t.Fatalf("%q is %d tokens", "red", len(ids))
				}
				var err error
				if v, err = enc.te.TokenEmbedding(ids[0]); err != nil {
					t.Fatal(err)
				}
			} else {
				v = make([]float32, 8) // the refiner has no first encoder: any width
			}
			ts = append(ts, safetensors.F32Tensor(enc.key, []int{1, len(v)}, v))
		}
		src, err := safetensors.NewMemory(ts)
		if err != nil {
			t.Fatal(err)
		}
		dims := map[string]int{lora.TextEncoder2: m.te2.Config().HiddenSize}
		if m.te1 != nil {
			dims[lora.TextEncoder] = m.te1.Config().HiddenSize
		}
		e, err := lora.ParseEmbedding(src, "zqxstyle", dims)
		if err != nil {
			t.Fatal(err)
		}
		opts := conditioning.Options{Emphasis: true, LongPrompts: true, Embeddings: []*lora.Embedding{e}}
		got, err := m.EncodePrompts(context.Background(), "a zqxstyle circle", "", opts)
		if err != nil {
			t.Fatal(err)
		}
		opts.Embeddings = nil
		want, err := m.EncodePrompts(context.Background(), "a red circle", "", opts)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := m.EncodePrompts(context.Background(), "a zqxstyle circle", "", opts)
		if err != nil {
			t.Fatal(err)
		}
		if d := fixtures.RelErr(got.Hidden, want.Hidden); d > 1e-6 {
			t.Errorf("%s: hidden states differ from the word's by %.3g", name, d)
		}
		if d := fixtures.RelErr(got.Pooled, want.Pooled); d > 1e-6 {
			t.Errorf("%s: pooled output differs from the word's by %.3g", name, d)
		}
		if fixtures.RelErr(plain.Hidden, want.Hidden) < 1e-3 {
			t.Errorf("%s: the test cannot tell the embedding from the plain text", name)
		}
	}
}
