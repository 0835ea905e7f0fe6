package tokenizer

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadTokenizerJSON: any tokenizer.json gives a tokenizer or an error,
// never a panic or a huge allocation; a tokenizer that loads encodes text.
func FuzzLoadTokenizerJSON(f *testing.F) {
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"a</w>":0,"b</w>":1,"<|startoftext|>":2,"<|endoftext|>":3},"merges":["a b"]},"added_tokens":[{"id":2,"content":"<|startoftext|>"},{"id":3,"content":"<|endoftext|>"}]}`))
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"x":5000000},"merges":[["a","b"]]}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		vocab, merges, added, unk, err := parseTokenizerJSON(data, endOfWord)
		if err != nil {
			return
		}
		tok, err := build(vocab, merges, added, config{bos: defaultBOS, eos: defaultEOS, maxLength: defaultMaxLength}, unk)
		if err != nil {
			return
		}
		_ = tok.Encode("a photo of a b")
	})
}

// FuzzLoadVocabMerges: any vocab.json + merges.txt pair loads or fails
// cleanly.
func FuzzLoadVocabMerges(f *testing.F) {
	f.Add([]byte(`{"a</w>":0,"b</w>":1,"<|startoftext|>":2,"<|endoftext|>":3,"ab</w>":4}`), []byte("#version: 0.2\na b</w>\n"))
	f.Add([]byte(`{"a":-1}`), []byte("a b c\n"))
	f.Fuzz(func(t *testing.T, vocab, merges []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "vocab.json"), vocab, 0o644)
		os.WriteFile(filepath.Join(dir, "merges.txt"), merges, 0o644)
		tok, err := Load(dir)
		if err != nil {
			return
		}
		_ = tok.Encode("a b ab")
	})
}
