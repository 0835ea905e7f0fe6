package qwenimage

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/model/qwen2"
	"github.com/kiln-project/kiln/core/model/qwenimage/qitest"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tokenizer"
)

type fixtureMeta struct {
	Tokenizer struct {
		IDs   map[string][]int32 `json:"ids"`
		Plain map[string][]int32 `json:"ids_plain"`
	} `json:"tokenizer"`
	Template string   `json:"template"`
	DropIdx  int      `json:"drop_idx"`
	Prompts  []string `json:"prompts"`
	Negative string   `json:"negative"`
	Pipe     struct {
		Height, Width, Steps int
		Seed                 uint64
	} `json:"pipe"`
	I2I struct {
		Prompt   string  `json:"prompt"`
		Negative string  `json:"negative_prompt"`
		CFG      float64 `json:"true_cfg_scale"`
		Strength float64 `json:"strength"`
		Seed     uint64  `json:"seed"`
		Steps    int     `json:"steps"`
	} `json:"i2i"`
	Schedules []struct {
		Steps     int       `json:"steps"`
		Seq       int       `json:"seq"`
		Mu        float64   `json:"mu"`
		Sigmas    []float64 `json:"sigmas"`
		Timesteps []float64 `json:"timesteps"`
	} `json:"schedules"`
}

func meta(t *testing.T) fixtureMeta {
	var m fixtureMeta
	qitest.Meta(t, &m)
	return m
}

// TestTokenizerMatchesTransformers: the Qwen2 tokenizer gives
// Qwen2Tokenizer's ids for templated prompts (special tokens, NFC,
// contractions, digits, newlines, runs of spaces, CJK, emoji), from
// tokenizer.json and from vocab.json + merges.txt + tokenizer_config.json.
func TestTokenizerMatchesTransformers(t *testing.T) {
	m := meta(t)
	if m.Template != PromptTemplate || m.DropIdx != DropTokens {
		t.Fatalf("pipeline template/drop index changed: %q %d", m.Template, m.DropIdx)
	}
	dir := filepath.Join(qitest.Dir(), "pipe", "tokenizer")
	legacy := t.TempDir()
	for _, f := range []string{"vocab.json", "merges.txt", "tokenizer_config.json"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(legacy, f), data, 0o644)
	}
	for _, d := range []string{dir, legacy} {
		tok, err := tokenizer.LoadQwen2(d)
		if err != nil {
			t.Fatal(err)
		}
		for p, want := range m.Tokenizer.IDs {
			if got := tok.Encode(strings.Replace(PromptTemplate, "{}", p, 1)); !slices.Equal(got, want) {
				t.Errorf("%s: %q:\n got %v\nwant %v", d, p, got, want)
			}
		}
		for p, want := range m.Tokenizer.Plain {
			if got := tok.Encode(p); !slices.Equal(got, want) {
				t.Errorf("%s: plain %q:\n got %v\nwant %v", d, p, got, want)
			} else if dec := tok.Decode(got); dec != p && !strings.Contains(p, "\u0308") {
				t.Logf("decode %q -> %q", p, dec)
			}
		}
	}
}

func loadTextEncoder(t *testing.T) *TextEncoder {
	t.Helper()
	dir := filepath.Join(qitest.Dir(), "pipe")
	tok, err := tokenizer.LoadQwen2(filepath.Join(dir, "tokenizer"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "text_encoder", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := qwen2.ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	src, err := safetensors.OpenIndex(filepath.Join(dir, "text_encoder", "model.safetensors.index.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	lm, err := qwen2.LanguageModel(src)
	if err != nil {
		t.Fatal(err)
	}
	model, err := qwen2.New(cpu.New(), cfg, lm)
	if err != nil {
		t.Fatal(err)
	}
	return &TextEncoder{Tok: tok, Model: model}
}

// TestPromptEmbedsMatchPipeline: the templated prompts, encoded as one
// batch and with the first 34 hidden states dropped, give
// QwenImagePipeline's prompt_embeds (zero-padded to the longest) and mask.
func TestPromptEmbedsMatchPipeline(t *testing.T) {
	m := meta(t)
	refs := qitest.Refs(t)
	want, shape := qitest.Tensor(t, refs, "prompt_embeds")
	mask, _ := qitest.Tensor(t, refs, "prompt_embeds_mask")
	enc := loadTextEncoder(t)
	hs, err := enc.Encode(context.Background(), m.Prompts)
	if err != nil {
		t.Fatal(err)
	}
	L, D := shape[1], shape[2]
	for b, h := range hs {
		n := len(h) / D
		for i := range L {
			if (i < n) != (mask[b*L+i] != 0) {
				t.Fatalf("prompt %d: %d tokens, the pipeline's mask differs at %d", b, n, i)
			}
		}
		qitest.Check(t, "prompt_embeds row", h, want[b*L*D:(b*L+n)*D], 1e-4)
	}
}
