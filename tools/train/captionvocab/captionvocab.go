// Package captionvocab builds a CLIP-format byte-level BPE vocabulary
// (vocab.json + merges.txt) for the built-in model's caption language, by
// learning merges over the grammar's words until each is a single token.
// Any other text still tokenizes through the byte-level base symbols.
package captionvocab

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Special tokens, as in CLIP.
const (
	StartOfText = "<|startoftext|>"
	EndOfText   = "<|endoftext|>"
)

// byteSymbols returns CLIP's reversible byte → printable-rune table in
// vocabulary order: printable Latin-1 bytes map to themselves, the other
// bytes to runes from 256 upwards.
func byteSymbols() []string {
	var bs []int
	for b := '!'; b <= '~'; b++ {
		bs = append(bs, int(b))
	}
	for b := '¡'; b <= '¬'; b++ {
		bs = append(bs, int(b))
	}
	for b := '®'; b <= 'ÿ'; b++ {
		bs = append(bs, int(b))
	}
	cs := append([]int(nil), bs...)
	in := make(map[int]bool, len(bs))
	for _, b := range bs {
		in[b] = true
	}
	n := 0
	for b := 0; b < 256; b++ {
		if !in[b] {
			bs = append(bs, b)
			cs = append(cs, 256+n)
			n++
		}
	}
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = string(rune(c))
	}
	return out
}

// Vocabulary is a learned tokenizer in CLIP's layout.
type Vocabulary struct {
	Tokens map[string]int // token → id
	Merges [][2]string    // in rank order
}

// Build learns merges over the given words (lower-case ASCII letters) with
// their frequencies until every word is one token.
func Build(words map[string]int) (*Vocabulary, error) {
	base := byteSymbols()
	v := &Vocabulary{Tokens: make(map[string]int)}
	for _, s := range base {
		v.Tokens[s] = len(v.Tokens)
	}
	for _, s := range base {
		v.Tokens[s+"</w>"] = len(v.Tokens)
	}
	type word struct {
		syms []string
		freq int
	}
	var ws []*word
	names := make([]string, 0, len(words))
	for w := range words {
		names = append(names, w)
	}
	sort.Strings(names)
	for _, w := range names {
		if w == "" || strings.ToLower(w) != w || strings.ContainsAny(w, " \t\n") {
			return nil, fmt.Errorf("captionvocab: word %q must be lower case without spaces", w)
		}
		for _, r := range w {
			if r < 'a' || r > 'z' {
				return nil, fmt.Errorf("captionvocab: word %q: only a-z supported", w)
			}
		}
		syms := strings.Split(w, "")
		syms[len(syms)-1] += "</w>"
		ws = append(ws, &word{syms: syms, freq: words[w]})
	}
	for {
		counts := map[[2]string]int{}
		for _, w := range ws {
			for i := 0; i+1 < len(w.syms); i++ {
				counts[[2]string{w.syms[i], w.syms[i+1]}] += w.freq
			}
		}
		if len(counts) == 0 {
			break
		}
		var best [2]string
		bestN := -1
		for p, n := range counts {
			if n > bestN || (n == bestN && (p[0] < best[0] || (p[0] == best[0] && p[1] < best[1]))) {
				best, bestN = p, n
			}
		}
		merged := best[0] + best[1]
		v.Merges = append(v.Merges, best)
		if _, ok := v.Tokens[merged]; !ok {
			v.Tokens[merged] = len(v.Tokens)
		}
		for _, w := range ws {
			out := w.syms[:0:0]
			for i := 0; i < len(w.syms); i++ {
				if i+1 < len(w.syms) && w.syms[i] == best[0] && w.syms[i+1] == best[1] {
					out = append(out, merged)
					i++
				} else {
					out = append(out, w.syms[i])
				}
			}
			w.syms = out
		}
	}
	v.Tokens[StartOfText] = len(v.Tokens)
	v.Tokens[EndOfText] = len(v.Tokens)
	return v, nil
}

// WriteFiles writes vocab.json, merges.txt and tokenizer_config.json into dir.
func (v *Vocabulary) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("captionvocab: %w", err)
	}
	vj, err := json.Marshal(v.Tokens)
	if err != nil {
		return fmt.Errorf("captionvocab: encode vocab: %w", err)
	}
	var mb strings.Builder
	mb.WriteString("#version: 0.2\n")
	for _, m := range v.Merges {
		mb.WriteString(m[0] + " " + m[1] + "\n")
	}
	cfg := map[string]any{
		"bos_token":        StartOfText,
		"eos_token":        EndOfText,
		"pad_token":        EndOfText,
		"unk_token":        EndOfText,
		"model_max_length": 77,
		"tokenizer_class":  "CLIPTokenizer",
	}
	cj, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("captionvocab: encode config: %w", err)
	}
	for name, data := range map[string][]byte{"vocab.json": vj, "merges.txt": []byte(mb.String()), "tokenizer_config.json": cj} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return fmt.Errorf("captionvocab: %w", err)
		}
	}
	return nil
}
