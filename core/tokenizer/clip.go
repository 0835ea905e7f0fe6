package tokenizer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"strings"
)

// clipMerges is merges.txt of the CLIP BPE vocabulary that OpenAI
// published with CLIP (MIT licence), gzip-compressed. The vocabulary
// itself follows from it: the 256 byte-level symbols, the same with the
// end-of-word marker, one token per merge, then <|startoftext|> and
// <|endoftext|> — 49408 tokens, as CLIP's own tokenizer builds them.
//
//go:embed clip_merges.txt.gz
var clipMerges []byte

// CLIPVocabSize is the size of the embedded CLIP vocabulary.
const CLIPVocabSize = 49408

// Pad tokens of the CLIP text encoders Stable Diffusion uses.
const (
	// PadSD1 pads with <|endoftext|> (OpenAI CLIP, SD 1.x).
	PadSD1 = defaultEOS
	// PadSD2 pads with "!" (id 0), as SD 2.x's OpenCLIP tokenizer does.
	PadSD2 = "!"
)

// CLIP returns the CLIP tokenizer built from the embedded vocabulary
// (what SD 1.x and 2.x checkpoints use), padding with pad, so that a
// single-file checkpoint needs no tokenizer folder.
func CLIP(pad string) (*Tokenizer, error) {
	zr, err := gzip.NewReader(bytes.NewReader(clipMerges))
	if err != nil {
		return nil, fmt.Errorf("tokenizer: embedded CLIP merges: %w", err)
	}
	var merges [][2]string
	sc := bufio.NewScanner(zr)
	line := 0
	for sc.Scan() {
		line++
		s := sc.Text()
		if s == "" || (line == 1 && strings.HasPrefix(s, "#version")) {
			continue
		}
		a, b, ok := strings.Cut(s, " ")
		if !ok {
			return nil, fmt.Errorf("tokenizer: embedded CLIP merges, line %d: %q", line, s)
		}
		merges = append(merges, [2]string{a, b})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokenizer: embedded CLIP merges: %w", err)
	}
	vocab := make(map[string]int32, CLIPVocabSize)
	var symbols []string
	// CLIP orders the byte-level symbols with the printable bytes first,
	// then the others (which the alphabet maps to U+0100 on).
	alpha := byteLevelAlphabet()
	for b := 0; b < 256; b++ {
		if alpha[b] == rune(b) {
			symbols = append(symbols, string(alpha[b]))
		}
	}
	for b := 0; b < 256; b++ {
		if alpha[b] != rune(b) {
			symbols = append(symbols, string(alpha[b]))
		}
	}
	add := func(tok string) {
		if _, dup := vocab[tok]; !dup {
			vocab[tok] = int32(len(vocab))
		}
	}
	for _, s := range symbols {
		add(s)
	}
	for _, s := range symbols {
		add(s + endOfWord)
	}
	for _, m := range merges {
		add(m[0] + m[1])
	}
	add(defaultBOS)
	add(defaultEOS)
	if len(vocab) != CLIPVocabSize {
		return nil, fmt.Errorf("tokenizer: embedded CLIP vocabulary has %d tokens, want %d", len(vocab), CLIPVocabSize)
	}
	cfg := config{bos: defaultBOS, eos: defaultEOS, pad: pad, unk: defaultEOS, maxLength: defaultMaxLength}
	added := []addedToken{{content: defaultBOS, id: vocab[defaultBOS]}, {content: defaultEOS, id: vocab[defaultEOS]}}
	return build(vocab, merges, added, cfg, defaultEOS)
}
