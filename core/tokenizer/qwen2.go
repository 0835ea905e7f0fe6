package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Qwen2 is the byte-level BPE tokenizer of Qwen2 and Qwen2.5 (and so of
// Qwen-Image's text encoder): added tokens such as <|im_start|> are matched
// verbatim in the raw text, the rest is NFC-normalised, split by Qwen2's
// pre-tokenizer expression, mapped to byte-level characters and merged by
// rank, without an end-of-word marker, lower-casing or BOS/EOS framing. It
// reproduces transformers' Qwen2Tokenizer ids and is safe for concurrent use.
type Qwen2 struct {
	vocab   map[string]int32
	tokens  []string
	merges  map[pair]merge
	added   []addedToken // longest first
	byteID  [256]int32
	chrByte map[rune]byte
	pad     int32

	mu    sync.Mutex
	cache map[string][]int32
}

// LoadQwen2 reads a Qwen2 tokenizer from dir: tokenizer.json when present,
// else vocab.json + merges.txt with the added tokens of
// tokenizer_config.json (added_tokens_decoder) and added_tokens.json.
func LoadQwen2(dir string) (*Qwen2, error) {
	var (
		vocab  map[string]int32
		merges [][2]string
		added  []addedToken
		err    error
	)
	if data, rerr := os.ReadFile(filepath.Join(dir, "tokenizer.json")); rerr == nil {
		vocab, merges, added, _, err = parseTokenizerJSON(data, "")
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", filepath.Join(dir, "tokenizer.json"), err)
		}
	} else if !errors.Is(rerr, fs.ErrNotExist) {
		return nil, fmt.Errorf("tokenizer: %w", rerr)
	} else if vocab, merges, err = readVocabMerges(dir); err != nil {
		return nil, err
	}
	cfgAdded, pad, err := readQwen2Config(dir)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, a := range added {
		seen[a.content] = true
	}
	for _, a := range cfgAdded {
		if !seen[a.content] {
			added = append(added, a)
			seen[a.content] = true
		}
	}
	return buildQwen2(vocab, merges, added, pad)
}

// readQwen2Config returns the added tokens of tokenizer_config.json and
// added_tokens.json and the pad token ("<|endoftext|>" by default).
func readQwen2Config(dir string) ([]addedToken, string, error) {
	pad := "<|endoftext|>"
	var added []addedToken
	path := filepath.Join(dir, "tokenizer_config.json")
	if data, err := os.ReadFile(path); err == nil {
		var c struct {
			Pad     tokenField `json:"pad_token"`
			Decoder map[string]struct {
				Content string `json:"content"`
			} `json:"added_tokens_decoder"`
		}
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, "", fmt.Errorf("tokenizer: %s: %w", path, err)
		}
		if c.Pad.set {
			pad = c.Pad.content
		}
		for k, v := range c.Decoder {
			id, err := strconv.ParseInt(k, 10, 32)
			if err != nil || id < 0 || id >= maxVocab || v.Content == "" {
				return nil, "", fmt.Errorf("tokenizer: %s: added_tokens_decoder[%q]: want a token id and content", path, k)
			}
			added = append(added, addedToken{content: v.Content, id: int32(id)})
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", fmt.Errorf("tokenizer: %w", err)
	}
	path = filepath.Join(dir, "added_tokens.json")
	if data, err := os.ReadFile(path); err == nil {
		var m map[string]int64
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, "", fmt.Errorf("tokenizer: %s: %w", path, err)
		}
		for s, id := range m {
			if id < 0 || id >= maxVocab || s == "" {
				return nil, "", fmt.Errorf("tokenizer: %s: %q = %d: bad added token", path, s, id)
			}
			added = append(added, addedToken{content: s, id: int32(id)})
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", fmt.Errorf("tokenizer: %w", err)
	}
	// Deterministic order whatever the map order was.
	sort.Slice(added, func(i, j int) bool { return added[i].id < added[j].id })
	return added, pad, nil
}

func buildQwen2(vocab map[string]int32, merges [][2]string, added []addedToken, pad string) (*Qwen2, error) {
	size := int32(0)
	for _, id := range vocab {
		size = max(size, id+1)
	}
	for _, a := range added {
		size = max(size, a.id+1)
	}
	t := &Qwen2{vocab: vocab, tokens: make([]string, size), merges: make(map[pair]merge, len(merges)),
		chrByte: make(map[rune]byte, 256), cache: map[string][]int32{}}
	for tok, id := range vocab {
		if t.tokens[id] == "" || tok < t.tokens[id] {
			t.tokens[id] = tok
		}
	}
	for _, a := range added {
		t.tokens[a.id] = a.content
	}
	chr := byteLevelAlphabet()
	for b, r := range chr {
		t.chrByte[r] = byte(b)
		id, ok := vocab[string(r)]
		if !ok {
			return nil, fmt.Errorf("tokenizer: byte-level symbol %q (byte %#x) is not in the vocabulary", string(r), b)
		}
		t.byteID[b] = id
	}
	for i, m := range merges {
		a, okA := vocab[m[0]]
		b, okB := vocab[m[1]]
		id, okM := vocab[m[0]+m[1]]
		if !okA || !okB || !okM {
			return nil, fmt.Errorf("tokenizer: merge %d (%q %q) uses a symbol that is not in the vocabulary", i+1, m[0], m[1])
		}
		if _, dup := t.merges[pair{a, b}]; !dup {
			t.merges[pair{a, b}] = merge{rank: int32(i), id: id}
		}
	}
	sort.SliceStable(added, func(i, j int) bool { return len(added[i].content) > len(added[j].content) })
	t.added = added
	t.pad = -1
	for _, a := range added {
		if a.content == pad {
			t.pad = a.id
		}
	}
	if id, ok := vocab[pad]; ok && t.pad < 0 {
		t.pad = id
	}
	if t.pad < 0 {
		return nil, fmt.Errorf("tokenizer: pad token %q is not in the vocabulary", pad)
	}
	return t, nil
}

// Pad returns the id of the padding token.
func (t *Qwen2) Pad() int32 { return t.pad }

// VocabSize returns one more than the largest token id.
func (t *Qwen2) VocabSize() int { return len(t.tokens) }

// ID returns the id of a token (an added token or a vocabulary entry).
func (t *Qwen2) ID(token string) (int32, bool) {
	for _, a := range t.added {
		if a.content == token {
			return a.id, true
		}
	}
	id, ok := t.vocab[token]
	return id, ok
}

// Encode turns text into token ids. Any string is accepted; invalid UTF-8
// is replaced by U+FFFD first.
func (t *Qwen2) Encode(text string) []int32 {
	if !utf8.ValidString(text) {
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	var ids []int32
	for text != "" {
		pos, tok := nextAddedIn(t.added, text)
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

// Decode turns ids back into text; ids outside the vocabulary are skipped.
func (t *Qwen2) Decode(ids []int32) string {
	var raw []byte
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.tokens) {
			continue
		}
		tok := t.tokens[id]
		if slicesContainsID(t.added, id) {
			raw = append(raw, tok...)
			continue
		}
		for _, r := range tok {
			if b, ok := t.chrByte[r]; ok {
				raw = append(raw, b)
			}
		}
	}
	return strings.ToValidUTF8(string(raw), "\uFFFD")
}

func slicesContainsID(added []addedToken, id int32) bool {
	for _, a := range added {
		if a.id == id {
			return true
		}
	}
	return false
}

// nextAddedIn finds the leftmost (then longest) added token in text.
func nextAddedIn(added []addedToken, text string) (int, addedToken) {
	best, bestTok := -1, addedToken{}
	for _, a := range added {
		if p := strings.Index(text, a.content); p >= 0 && (best < 0 || p < best) {
			best, bestTok = p, a
		}
	}
	return best, bestTok
}

func (t *Qwen2) encodeNormal(text string, dst []int32) []int32 {
	if text == "" {
		return dst
	}
	splitQwen2(norm.NFC.String(text), func(piece string) {
		t.mu.Lock()
		ids, ok := t.cache[piece]
		t.mu.Unlock()
		if !ok {
			ids = t.bpe(piece)
			t.mu.Lock()
			if len(t.cache) >= maxCachedWords {
				clear(t.cache)
			}
			t.cache[piece] = ids
			t.mu.Unlock()
		}
		dst = append(dst, ids...)
	})
	return dst
}

// bpe encodes the bytes of piece as byte-level symbols and applies merges:
// the lowest-ranked adjacent pair is joined everywhere it occurs, left to
// right, until no pair has a merge.
func (t *Qwen2) bpe(piece string) []int32 {
	syms := make([]int32, len(piece))
	for i := 0; i < len(piece); i++ {
		syms[i] = t.byteID[piece[i]]
	}
	return applyMerges(t.merges, syms)
}

// applyMerges runs BPE over syms with the ranked merges.
func applyMerges(merges map[pair]merge, syms []int32) []int32 {
	for len(syms) > 1 {
		best := merge{rank: -1}
		var bp pair
		for i := 0; i+1 < len(syms); i++ {
			p := pair{syms[i], syms[i+1]}
			if m, ok := merges[p]; ok && (best.rank < 0 || m.rank < best.rank) {
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

// splitQwen2 cuts normalised text into pieces as Qwen2's pre-tokenizer
// expression does, trying its alternatives in order at each position:
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
func splitQwen2(s string, emit func(piece string)) {
	for i := 0; i < len(s); {
		n := qwen2Match(s, i)
		emit(s[i : i+n])
		i += n
	}
}

func isNL(r rune) bool { return r == '\r' || r == '\n' }

// qwen2Match returns the length of the expression's match at s[i:] (every
// position matches one alternative).
func qwen2Match(s string, i int) int {
	r, size := utf8.DecodeRuneInString(s[i:])
	// 's 't 're 've 'm 'll 'd, case-insensitively.
	if r == '\'' {
		rest := strings.ToLower(s[i+1 : min(len(s), i+3)])
		for _, c := range []string{"s", "t", "re", "ve", "m", "ll", "d"} {
			if strings.HasPrefix(rest, c) {
				return 1 + len(c)
			}
		}
	}
	letters := func(j int) int { // end of the run of letters from j
		for j < len(s) {
			r, n := utf8.DecodeRuneInString(s[j:])
			if !unicode.IsLetter(r) {
				break
			}
			j += n
		}
		return j
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if unicode.IsLetter(r) {
		return letters(i) - i
	}
	if !isNL(r) && !unicode.IsNumber(r) && i+size < len(s) {
		if r2, _ := utf8.DecodeRuneInString(s[i+size:]); unicode.IsLetter(r2) {
			return letters(i+size) - i
		}
	}
	// \p{N}
	if unicode.IsNumber(r) {
		return size
	}
	// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
	other := func(r rune) bool { return !unicode.IsSpace(r) && !unicode.IsLetter(r) && !unicode.IsNumber(r) }
	j := i
	if r == ' ' {
		j += size
	}
	if j < len(s) {
		if r2, _ := utf8.DecodeRuneInString(s[j:]); other(r2) {
			for j < len(s) {
				r2, n := utf8.DecodeRuneInString(s[j:])
				if !other(r2) {
					break
				}
				j += n
			}
			for j < len(s) && isNL(rune(s[j])) {
				j++
			}
			return j - i
		}
	}
	// The remaining alternatives start with white space.
	end, lastNL := i, -1
	for end < len(s) {
		r2, n := utf8.DecodeRuneInString(s[end:])
		if !unicode.IsSpace(r2) {
			break
		}
		if isNL(r2) {
			lastNL = end
		}
		end += n
	}
	if end == i { // not white space: cannot happen for valid text, but never loop
		return size
	}
	// \s*[\r\n]+ : up to and including the last newline of the run.
	if lastNL >= 0 {
		return lastNL + 1 - i
	}
	// \s+(?!\S) : the run, less its last character when text follows.
	if end == len(s) {
		return end - i
	}
	_, lastSize := utf8.DecodeLastRuneInString(s[:end])
	if end-lastSize > i {
		return end - lastSize - i
	}
	// \s+
	return end - i
}

// NewQwen2ByteLevel returns a Qwen2 tokenizer with no merges: the 256
// byte-level symbols (ids 0–255) and the special tokens after them, the
// first being the pad token. Text encodes byte by byte, with the
// pre-tokenizer and added-token handling of a real one (for synthetic
// random-weight models).
func NewQwen2ByteLevel(special []string) (*Qwen2, error) {
	if len(special) == 0 {
		return nil, errors.New("tokenizer: a byte-level Qwen2 tokenizer needs a pad token")
	}
	vocab := make(map[string]int32, 256)
	for b, r := range byteLevelAlphabet() {
		vocab[string(r)] = int32(b)
	}
	added := make([]addedToken, len(special))
	for i, s := range special {
		added[i] = addedToken{content: s, id: int32(256 + i)}
	}
	return buildQwen2(vocab, nil, added, special[0])
}
