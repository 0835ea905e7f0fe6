package tokenizer

import (
	"slices"
	"testing"

	"github.com/kiln-project/kiln/internal/fixtures"
)

// TestEmbeddedCLIPMatchesFiles checks that the embedded vocabulary is the
// published one: the same ids as vocab.json + merges.txt for every token,
// and the same encodings.
func TestEmbeddedCLIPMatchesFiles(t *testing.T) {
	dir := fixtures.Require(t, "clip-tokenizer")
	files, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	emb, err := CLIP(PadSD1)
	if err != nil {
		t.Fatal(err)
	}
	if len(emb.vocab) != len(files.vocab) {
		t.Fatalf("embedded vocabulary has %d tokens, files %d", len(emb.vocab), len(files.vocab))
	}
	for tok, id := range files.vocab {
		if emb.vocab[tok] != id {
			t.Fatalf("token %q: embedded id %d, file id %d", tok, emb.vocab[tok], id)
		}
	}
	for _, text := range []string{"a photograph of an astronaut riding a horse", "Ünïcødé, émojis 🐈 and <|endoftext|> tokens!!", "don't   stop"} {
		a, b := emb.Encode(text), files.Encode(text)
		if !slices.Equal(a, b) {
			t.Fatalf("%q: embedded %v, files %v", text, a, b)
		}
	}
}

func TestEmbeddedCLIPPads(t *testing.T) {
	sd1, err := CLIP(PadSD1)
	if err != nil {
		t.Fatal(err)
	}
	sd2, err := CLIP(PadSD2)
	if err != nil {
		t.Fatal(err)
	}
	if sd1.Pad() != CLIPVocabSize-1 || sd2.Pad() != 0 {
		t.Fatalf("pad ids %d %d", sd1.Pad(), sd2.Pad())
	}
}
