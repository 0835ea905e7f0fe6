package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// referencePrompts returns the fixture prompts and their reference ids
// (8 × 77), skipping when the fixtures are absent.
func referencePrompts(t *testing.T) ([]string, [][]int32) {
	t.Helper()
	jsonPath := fixtures.Require(t, "sd15-tiny/reference.json")
	stPath := fixtures.Require(t, "sd15-tiny/reference.safetensors")
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	prompts, err := readPrompts(data)
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(stPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids, shape, err := safetensors.Int64(f, "tok/input_ids")
	if err != nil {
		t.Fatal(err)
	}
	if len(shape) != 2 || shape[0] != len(prompts) {
		t.Fatalf("tok/input_ids shape %v for %d prompts", shape, len(prompts))
	}
	want := make([][]int32, shape[0])
	for i := range want {
		for _, v := range ids[i*shape[1] : (i+1)*shape[1]] {
			want[i] = append(want[i], int32(v))
		}
	}
	return prompts, want
}

// readPrompts takes the "prompts" list from reference.json, reading only
// as far as it: later parts of the file hold NaN, which encoding/json
// rejects.
func readPrompts(data []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil, err
		}
		if key == "prompts" {
			var p []string
			err := dec.Decode(&p)
			return p, err
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("reference.json has no prompts")
}

func loadFixture(t testing.TB, rel string) *Tokenizer {
	t.Helper()
	tok, err := Load(fixtures.Require(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestFixturePrompts(t *testing.T) {
	prompts, want := referencePrompts(t)
	for _, dir := range []string{"sd15-tiny/model/tokenizer", "clip-tokenizer"} {
		t.Run(dir, func(t *testing.T) {
			tok := loadFixture(t, dir)
			if tok.MaxLength() != 77 || tok.BOS() != 49406 || tok.EOS() != 49407 || tok.Pad() != 49407 {
				t.Fatalf("max %d bos %d eos %d pad %d", tok.MaxLength(), tok.BOS(), tok.EOS(), tok.Pad())
			}
			if tok.VocabSize() != 49408 {
				t.Fatalf("vocab size %d", tok.VocabSize())
			}
			for i, p := range prompts {
				got := tok.EncodePadded(p)
				if !slices.Equal(got, want[i]) {
					t.Errorf("prompt %q:\n got %v\nwant %v", p, got, want[i])
				}
			}
		})
	}
}

// TestKnownEncodings pins behaviour that the fixture prompts do not reach,
// stated in terms of the vocabulary so that it documents the rule.
func TestKnownEncodings(t *testing.T) {
	tok := loadFixture(t, "sd15-tiny/model/tokenizer")
	ids := func(toks ...string) []int32 {
		var out []int32
		for _, s := range toks {
			id, ok := tok.ID(s)
			if !ok {
				t.Fatalf("%q not in vocabulary", s)
			}
			out = append(out, id)
		}
		return out
	}
	cases := []struct {
		text string
		want []int32
	}{
		// white space of any kind separates words and disappears
		{"  cat\t\n dog\u00a0\u3000", ids("cat</w>", "dog</w>")},
		// upper case folds to lower case
		{"CAT Dog", ids("cat</w>", "dog</w>")},
		// digits are one token each
		{"42", ids("4</w>", "2</w>")},
		// contractions split off; a punctuation run stays together
		{"it's", ids("it</w>", "'s</w>")},
		{"!!'s", append(tok.Encode("!!'"), tok.Encode("s")...)},
		// parentheses are ordinary punctuation for the plain tokenizer
		{"(cat)", ids("(</w>", "cat</w>", ")</w>")},
		// a literal special token in the text is that token
		{"a<|endoftext|>b", ids("a</w>", "<|endoftext|>", "b</w>")},
		// the same spelling in another case is text: normalised, then split
		// by the byte-level expression into "<|", "endoftext", "|>"
		{"<|ENDOFTEXT|>", append(append(tok.Encode("<|"), tok.Encode("endoftext")...), tok.Encode("|>")...)},
		// NFC: e + combining acute is é
		{"cafe\u0301", tok.Encode("café")},
	}
	for _, c := range cases {
		if got := tok.Encode(c.text); !slices.Equal(got, c.want) {
			t.Errorf("Encode(%q) = %v, want %v", c.text, got, c.want)
		}
	}
	if got := tok.Decode(tok.Encode("A Photo of an Astronaut, 4k!!")); got != "a photo of an astronaut , 4 k !!" {
		t.Errorf("Decode round trip = %q", got)
	}
}

func TestTruncationAndPadding(t *testing.T) {
	tok := loadFixture(t, "clip-tokenizer")
	long := strings.Repeat("cat ", 200)
	got := tok.EncodePadded(long)
	if len(got) != 77 || got[0] != tok.BOS() || got[76] != tok.EOS() {
		t.Fatalf("long prompt: len %d first %d last %d", len(got), got[0], got[76])
	}
	cat, _ := tok.ID("cat</w>")
	for i := 1; i < 76; i++ {
		if got[i] != cat {
			t.Fatalf("position %d = %d, want cat", i, got[i])
		}
	}
	empty := tok.EncodePadded("")
	if empty[0] != tok.BOS() || empty[1] != tok.EOS() || len(empty) != 77 {
		t.Fatalf("empty prompt: %v", empty)
	}
}

// TestConfigPad loads the fixture vocabulary with an SD 2.x style config
// (pad "!", a custom length) to prove tokenizer_config.json is honoured.
func TestConfigPad(t *testing.T) {
	src := fixtures.Require(t, "clip-tokenizer")
	dir := t.TempDir()
	for _, name := range []string{"vocab.json", "merges.txt"} {
		if err := os.Symlink(filepath.Join(src, name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := `{"pad_token": {"content": "!", "__type": "AddedToken"}, "model_max_length": 10, "bos_token": "<|startoftext|>"}`
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := tok.EncodePadded("a cat")
	a, _ := tok.ID("a</w>")
	cat, _ := tok.ID("cat</w>")
	want := []int32{49406, a, cat, 49407, 0, 0, 0, 0, 0, 0}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
}

func TestLoadErrors(t *testing.T) {
	cases := map[string]map[string]string{
		"empty folder":      {},
		"vocab no merges":   {"vocab.json": `{"a": 0}`},
		"bad vocab json":    {"vocab.json": `{"a": `, "merges.txt": ""},
		"negative id":       {"vocab.json": `{"a": -1}`, "merges.txt": ""},
		"merge not in voc":  {"vocab.json": `{"a": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}`, "merges.txt": "#version: 0.2\na b\n"},
		"bad merge line":    {"vocab.json": `{"a": 0}`, "merges.txt": "#version: 0.2\nab\n"},
		"missing bos":       {"vocab.json": `{"a": 0, "<|endoftext|>": 1}`, "merges.txt": ""},
		"bad max length":    {"vocab.json": `{"a": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}`, "merges.txt": "", "tokenizer_config.json": `{"model_max_length": 1.5}`},
		"bad pad field":     {"vocab.json": `{"a": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}`, "merges.txt": "", "tokenizer_config.json": `{"pad_token": 5}`},
		"json not BPE":      {"tokenizer.json": `{"model": {"type": "WordPiece", "vocab": {"a": 0}}}`},
		"json no suffix":    {"tokenizer.json": `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}`},
		"json no model":     {"tokenizer.json": `{}`},
		"json bad merges":   {"tokenizer.json": `{"model": {"type": "BPE", "end_of_word_suffix": "</w>", "vocab": {"a": 0}, "merges": [["a"]]}}`},
		"json added no id":  {"tokenizer.json": `{"added_tokens": [{"content": "x"}], "model": {"type": "BPE", "end_of_word_suffix": "</w>", "vocab": {"a": 0}, "merges": []}}`},
		"json huge id":      {"tokenizer.json": `{"model": {"type": "BPE", "end_of_word_suffix": "</w>", "vocab": {"a": 99999999999}, "merges": []}}`},
		"json truncated":    {"tokenizer.json": `{"model": {"type": "BPE"`},
		"json merges bad s": {"tokenizer.json": `{"model": {"type": "BPE", "end_of_word_suffix": "</w>", "vocab": {"a": 0}, "merges": ["a b c"]}}`},
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			for f, body := range files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := Load(dir); err == nil || !strings.HasPrefix(err.Error(), "tokenizer: ") {
				t.Fatalf("Load = %v, want a tokenizer error", err)
			}
		})
	}
}

// TestBothMergeSpellings checks that a tokenizer.json with merges written
// as "a b" strings encodes like the fixture's pair spelling.
func TestBothMergeSpellings(t *testing.T) {
	path := filepath.Join(fixtures.Require(t, "sd15-tiny/model/tokenizer"), "tokenizer.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	model := doc["model"].(map[string]any)
	var joined []string
	for _, m := range model["merges"].([]any) {
		p := m.([]any)
		joined = append(joined, p[0].(string)+" "+p[1].(string))
	}
	model["merges"] = joined
	out, _ := json.Marshal(doc)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	ref := loadFixture(t, "sd15-tiny/model/tokenizer")
	for _, s := range []string{"a photograph of an astronaut riding a horse", "café déjà vu", "emoji 🚀🔥"} {
		if a, b := tok.Encode(s), ref.Encode(s); !slices.Equal(a, b) {
			t.Errorf("%q: %v vs %v", s, a, b)
		}
	}
}

func FuzzEncode(f *testing.F) {
	tok := loadFixture(f, "sd15-tiny/model/tokenizer")
	for _, s := range []string{"", "a red circle", "(masterpiece:1.2)", "don't", "<|endoftext|>", "\xff\xfe", "İstanbul", "🚀🔥", "x\u0301\u0302", "１２３", "<|startoftext|><|endoftext|"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids := tok.Encode(s)
		for _, id := range ids {
			if id < 0 || int(id) >= tok.VocabSize() {
				t.Fatalf("id %d out of range for %q", id, s)
			}
		}
		padded := tok.EncodePadded(s)
		if len(padded) != tok.MaxLength() || padded[0] != tok.BOS() {
			t.Fatalf("padded length %d", len(padded))
		}
		n := min(len(ids), tok.MaxLength()-2)
		if !slices.Equal(padded[1:1+n], ids[:n]) || padded[1+n] != tok.EOS() {
			t.Fatalf("padded %v does not frame %v", padded, ids)
		}
		_ = tok.Decode(ids)
	})
}

func BenchmarkEncode(b *testing.B) {
	tok := loadFixture(b, "sd15-tiny/model/tokenizer")
	text := "A photo of an astronaut riding a horse on Mars, 4k!! highly detailed, masterpiece, best quality"
	for b.Loop() {
		tok.EncodePadded(text)
	}
}
