// Package tokenizer implements the CLIP byte-level BPE tokenizer used by
// Stable Diffusion text encoders. It loads a Hugging Face tokenizer.json or
// the older vocab.json + merges.txt pair, reads tokenizer_config.json for
// the special tokens and the maximum length, and reproduces the ids of
// transformers' CLIPTokenizer exactly: NFC, white-space clean-up and
// lower-casing, CLIP's word expression, byte-level characters, the </w>
// end-of-word marker, and merges applied by rank.
package tokenizer

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// endOfWord is the suffix CLIP's vocabulary marks the last symbol of a
// word with.
const endOfWord = "</w>"

// maxCachedWords bounds the per-tokenizer cache of encoded words; it is
// emptied when full.
const maxCachedWords = 1 << 15

// pair is two adjacent symbol ids that a merge may join.
type pair struct{ a, b int32 }

// merge is the rank of a merge rule (lower applies first) and the id of
// the symbol it produces.
type merge struct {
	rank int32
	id   int32
}

// addedToken is a token matched verbatim in the raw text before any
// normalisation, such as <|endoftext|>.
type addedToken struct {
	content string
	id      int32
}

// Tokenizer encodes text into CLIP token ids. It is safe for concurrent use.
type Tokenizer struct {
	vocab   map[string]int32
	tokens  []string // id → token text ("" where the id is unused)
	merges  map[pair]merge
	added   []addedToken // longest first
	byteChr [256]rune    // byte → byte-level character
	chrByte map[rune]byte
	byteID  [256]int32 // id of the byte's character, -1 if absent
	byteEnd [256]int32 // id of the byte's character + </w>, -1 if absent

	bos, eos, pad, unk int32
	maxLength          int

	mu    sync.Mutex
	cache map[string][]int32
}

// BOS returns the id of the start-of-text token.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS returns the id of the end-of-text token.
func (t *Tokenizer) EOS() int32 { return t.eos }

// Pad returns the id of the padding token.
func (t *Tokenizer) Pad() int32 { return t.pad }

// MaxLength returns the padded sequence length, BOS and EOS included
// (model_max_length, 77 for CLIP).
func (t *Tokenizer) MaxLength() int { return t.maxLength }

// VocabSize returns one more than the largest token id.
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// Token returns the text of token id, or "" for an id outside the vocabulary.
func (t *Tokenizer) Token(id int32) string {
	if id < 0 || int(id) >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// ID returns the id of a vocabulary entry written in byte-level characters
// (e.g. "cat</w>"), and whether it exists.
func (t *Tokenizer) ID(token string) (int32, bool) {
	id, ok := t.vocab[token]
	return id, ok
}

// Encode turns text into token ids without BOS, EOS, truncation or padding.
// Any string is accepted; invalid UTF-8 is replaced by U+FFFD first.
func (t *Tokenizer) Encode(text string) []int32 {
	if !utf8.ValidString(text) {
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	var ids []int32
	for text != "" {
		pos, tok := t.nextAdded(text)
		if pos < 0 {
			ids = t.encodeNormal(text, ids)
			break
		}
		ids = t.encodeNormal(text[:pos], ids)
		ids = append(ids, tok.id)
		text = text[pos+len(tok.content):]
	}
	return ids
}

// EncodePadded returns BOS, the ids of text truncated to MaxLength()-2,
// EOS, and padding up to MaxLength(): what CLIPTokenizer gives with
// padding="max_length", truncation=True.
func (t *Tokenizer) EncodePadded(text string) []int32 {
	return t.Frame(t.Encode(text))
}

// Frame frames ids (without special tokens) as one model input of
// MaxLength() tokens: BOS, ids truncated to MaxLength()-2, EOS, padding.
func (t *Tokenizer) Frame(ids []int32) []int32 {
	room := t.maxLength - 2
	if len(ids) > room {
		ids = ids[:room]
	}
	out := make([]int32, 0, t.maxLength)
	out = append(out, t.bos)
	out = append(out, ids...)
	out = append(out, t.eos)
	for len(out) < t.maxLength {
		out = append(out, t.pad)
	}
	return out
}

// Decode turns ids back into text, ends of words becoming spaces. Special
// tokens are written out; ids outside the vocabulary are skipped.
func (t *Tokenizer) Decode(ids []int32) string {
	var raw []byte
	for _, id := range ids {
		tok := t.Token(id)
		if t.isAdded(id) {
			raw = append(raw, tok...)
			continue
		}
		word := strings.HasSuffix(tok, endOfWord)
		tok = strings.TrimSuffix(tok, endOfWord)
		for _, r := range tok {
			if b, ok := t.chrByte[r]; ok {
				raw = append(raw, b)
			}
		}
		if word {
			raw = append(raw, ' ')
		}
	}
	return strings.TrimSpace(strings.ToValidUTF8(string(raw), "\uFFFD"))
}

func (t *Tokenizer) isAdded(id int32) bool {
	for _, a := range t.added {
		if a.id == id {
			return true
		}
	}
	return false
}

// nextAdded finds the leftmost (then longest) added token in text.
func (t *Tokenizer) nextAdded(text string) (int, addedToken) {
	best, bestTok := -1, addedToken{}
	for _, a := range t.added {
		if a.content == "" {
			continue
		}
		if p := strings.Index(text, a.content); p >= 0 && (best < 0 || p < best) {
			best, bestTok = p, a
		}
	}
	return best, bestTok
}

// encodeNormal normalises and encodes text that holds no added token,
// appending the ids to dst.
func (t *Tokenizer) encodeNormal(text string, dst []int32) []int32 {
	if text == "" {
		return dst
	}
	splitWords(normalize(text), func(piece string) {
		dst = append(dst, t.encodeWord(piece)...)
	})
	return dst
}

// encodeWord returns the BPE ids of one pre-tokenised piece, from the
// cache when it was seen before.
func (t *Tokenizer) encodeWord(piece string) []int32 {
	t.mu.Lock()
	ids, ok := t.cache[piece]
	t.mu.Unlock()
	if ok {
		return ids
	}
	ids = t.bpe(piece)
	t.mu.Lock()
	if len(t.cache) >= maxCachedWords {
		clear(t.cache)
	}
	t.cache[piece] = ids
	t.mu.Unlock()
	return ids
}

// bpe encodes the bytes of piece as byte-level symbols, marks the last one
// with </w>, and applies merges: the lowest-ranked adjacent pair is joined
// everywhere it occurs, left to right, until no pair has a merge.
func (t *Tokenizer) bpe(piece string) []int32 {
	syms := make([]int32, len(piece))
	for i := 0; i < len(piece); i++ {
		id := t.byteID[piece[i]]
		if i == len(piece)-1 {
			id = t.byteEnd[piece[i]]
		}
		if id < 0 {
			id = t.unk
		}
		syms[i] = id
	}
	for len(syms) > 1 {
		best := merge{rank: -1}
		var bp pair
		for i := 0; i+1 < len(syms); i++ {
			p := pair{syms[i], syms[i+1]}
			if m, ok := t.merges[p]; ok && (best.rank < 0 || m.rank < best.rank) {
				best, bp = m, p
			}
		}
		if best.rank < 0 {
			break
		}
		out := syms[:0]
		for i := 0; i < len(syms); i++ {
			if i+1 < len(syms) && syms[i] == bp.a && syms[i+1] == bp.b {
				out = append(out, best.id)
				i++
				continue
			}
			out = append(out, syms[i])
		}
		syms = out
	}
	return syms
}

// WithPad returns a tokenizer like t that pads with token (SDXL's second
// tokenizer pads with "!" where the first pads with <|endoftext|>).
func (t *Tokenizer) WithPad(token string) (*Tokenizer, error) {
	id, ok := t.vocab[token]
	if !ok {
		return nil, fmt.Errorf("tokenizer: pad token %q is not in the vocabulary", token)
	}
	c := &Tokenizer{vocab: t.vocab, tokens: t.tokens, merges: t.merges, added: t.added, byteChr: t.byteChr,
		chrByte: t.chrByte, byteID: t.byteID, byteEnd: t.byteEnd, bos: t.bos, eos: t.eos, pad: id, unk: t.unk,
		maxLength: t.maxLength, cache: map[string][]int32{}}
	return c, nil
}
