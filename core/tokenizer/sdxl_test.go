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

// TestWithPad: a tokenizer borrowed for SDXL's second encoder pads with "!"
// exactly as tokenizer_2 does.
func TestWithPad(t *testing.T) {
	dir := "../model/sdxl/testdata/base"
	t1, err := Load(filepath.Join(dir, "tokenizer"))
	if err != nil {
		t.Fatal(err)
	}
	t2, err := Load(filepath.Join(dir, "tokenizer_2"))
	if err != nil {
		t.Fatal(err)
	}
	bang, err := t1.WithPad("!")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"", "a red circle", "café déjà vu"} {
		if got, want := bang.EncodePadded(p), t2.EncodePadded(p); !slices.Equal(got, want) {
			t.Errorf("%q: %v, want %v", p, got, want)
		}
		if slices.Equal(bang.EncodePadded(p), t1.EncodePadded(p)) {
			t.Errorf("%q: padding unchanged", p)
		}
	}
	if _, err := t1.WithPad("no-such-token"); err == nil {
		t.Error("unknown pad token accepted")
	}
}
