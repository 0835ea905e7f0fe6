package tokenizer

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
)

// TestSDXLTokenizers checks SDXL's two tokenizers against transformers on
// the tiny SDXL fixture: the first pads with <|endoftext|>, the second
// with "!" (its tokenizer_config.json says so), both to 77 with truncation.
func TestSDXLTokenizers(t *testing.T) {
	dir := "../model/sdxl/testdata"
	data, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	prompts, err := readPrompts(data)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := safetensors.Open(filepath.Join(dir, "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	for _, tc := range []struct{ folder, key, pad string }{
		{"tokenizer", "tok/ids1", "<|endoftext|>"},
		{"tokenizer_2", "tok/ids2", "!"},
	} {
		tok, err := Load(filepath.Join(dir, "base", tc.folder))
		if err != nil {
			t.Fatal(err)
		}
		if got := tok.Token(tok.Pad()); got != tc.pad {
			t.Errorf("%s pads with %q, want %q", tc.folder, got, tc.pad)
		}
		ids, shape, err := safetensors.Int64(ref, tc.key)
		if err != nil {
			t.Fatal(err)
		}
		if shape[0] != len(prompts) {
			t.Fatalf("%s: %d rows for %d prompts", tc.key, shape[0], len(prompts))
		}
		for i, p := range prompts {
			want := make([]int32, shape[1])
			for j := range want {
				want[j] = int32(ids[i*shape[1]+j])
			}
			if got := tok.EncodePadded(p); !slices.Equal(got, want) {
				t.Errorf("%s %q:\n got %v\nwant %v", tc.folder, p, got, want)
			}
		}
	}
}
