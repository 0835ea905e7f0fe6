package tokenizer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Defaults of transformers' CLIPTokenizer, used where tokenizer_config.json
// is absent or silent.
const (
	defaultBOS       = "<|startoftext|>"
	defaultEOS       = "<|endoftext|>"
	defaultMaxLength = 77
	// maxVocab bounds token ids so that a corrupt file cannot demand a
	// huge allocation.
	maxVocab = 1 << 22
)

// Load reads a CLIP tokenizer from dir: tokenizer.json when present, else
// vocab.json and merges.txt; tokenizer_config.json (and
// special_tokens_map.json) give the special tokens and model_max_length.
func Load(dir string) (*Tokenizer, error) {
	var (
		vocab  map[string]int32
		merges [][2]string
		added  []addedToken
		unk    string
		err    error
	)
	if data, rerr := os.ReadFile(filepath.Join(dir, "tokenizer.json")); rerr == nil {
		vocab, merges, added, unk, err = parseTokenizerJSON(data, endOfWord)
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", filepath.Join(dir, "tokenizer.json"), err)
		}
	} else if !errors.Is(rerr, fs.ErrNotExist) {
		return nil, fmt.Errorf("tokenizer: %w", rerr)
	} else {
		vocab, merges, err = readVocabMerges(dir)
		if err != nil {
			return nil, err
		}
	}
	cfg, err := readConfig(dir)
	if err != nil {
		return nil, err
	}
	if unk == "" {
		unk = cfg.unk
	}
	if len(added) == 0 {
		// vocab.json + merges.txt: the special tokens of the config are the
		// ones matched verbatim in the text, as CLIPTokenizer does.
		for _, s := range []string{cfg.bos, cfg.eos, unk} {
			if id, ok := vocab[s]; ok && strings.HasPrefix(s, "<|") {
				added = append(added, addedToken{content: s, id: id})
			}
		}
	}
	return build(vocab, merges, added, cfg, unk)
}

// config is what the tokenizer takes from tokenizer_config.json.
type config struct {
	bos, eos, pad, unk string
	maxLength          int
}

// tokenField is a special-token entry: a plain string or an object with
// a "content" field (transformers' serialised AddedToken).
type tokenField struct {
	set     bool
	content string
}

// UnmarshalJSON accepts a string, an AddedToken object or null.
func (f *tokenField) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		f.set, f.content = true, s
		return nil
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(b, &obj); err != nil || obj.Content == nil {
		return fmt.Errorf("want a string or an object with \"content\", got %.40s", b)
	}
	f.set, f.content = true, *obj.Content
	return nil
}

type configJSON struct {
	BOS            tokenField `json:"bos_token"`
	EOS            tokenField `json:"eos_token"`
	Pad            tokenField `json:"pad_token"`
	Unk            tokenField `json:"unk_token"`
	ModelMaxLength *float64   `json:"model_max_length"`
}

// readConfig reads tokenizer_config.json and special_tokens_map.json when
// present (the former wins) and fills in CLIPTokenizer's defaults.
func readConfig(dir string) (config, error) {
	cfg := config{bos: defaultBOS, eos: defaultEOS, pad: defaultEOS, unk: defaultEOS, maxLength: defaultMaxLength}
	for _, name := range []string{"special_tokens_map.json", "tokenizer_config.json"} {
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return cfg, fmt.Errorf("tokenizer: %w", err)
		}
		var c configJSON
		if err := json.Unmarshal(data, &c); err != nil {
			return cfg, fmt.Errorf("tokenizer: %s: %w", path, err)
		}
		for _, f := range []struct {
			src *tokenField
			dst *string
		}{{&c.BOS, &cfg.bos}, {&c.EOS, &cfg.eos}, {&c.Pad, &cfg.pad}, {&c.Unk, &cfg.unk}} {
			if f.src.set {
				*f.dst = f.src.content
			}
		}
		if m := c.ModelMaxLength; m != nil {
			// transformers writes a huge sentinel for "no limit"; CLIP
			// position embeddings make 77 the only sensible value then.
			switch {
			case *m >= 3 && *m <= 1<<16 && *m == math.Trunc(*m):
				cfg.maxLength = int(*m)
			case *m > 1<<16:
				cfg.maxLength = defaultMaxLength
			default:
				return cfg, fmt.Errorf("tokenizer: %s: model_max_length %v: want an integer of at least 3", path, *m)
			}
		}
	}
	return cfg, nil
}

// parseTokenizerJSON reads the BPE model and added tokens of a Hugging Face
// tokenizer.json.
//
// eow is the end-of-word suffix the model must declare ("</w>" for CLIP,
// "" for GPT-2-style byte-level BPE such as Qwen2's).
func parseTokenizerJSON(data []byte, eow string) (map[string]int32, [][2]string, []addedToken, string, error) {
	var doc struct {
		AddedTokens []struct {
			ID      *int64 `json:"id"`
			Content string `json:"content"`
		} `json:"added_tokens"`
		Model *struct {
			Type                    string           `json:"type"`
			Vocab                   map[string]int64 `json:"vocab"`
			Merges                  json.RawMessage  `json:"merges"`
			UnkToken                *string          `json:"unk_token"`
			EndOfWordSuffix         *string          `json:"end_of_word_suffix"`
			ContinuingSubwordPrefix *string          `json:"continuing_subword_prefix"`
		} `json:"model"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, nil, "", err
	}
	m := doc.Model
	if m == nil {
		return nil, nil, nil, "", errors.New("no \"model\" section")
	}
	if m.Type != "BPE" {
		return nil, nil, nil, "", fmt.Errorf("model.type %q: only BPE tokenizers are supported", m.Type)
	}
	if got := ""; m.EndOfWordSuffix != nil || eow != "" {
		if m.EndOfWordSuffix != nil {
			got = *m.EndOfWordSuffix
		}
		if m.EndOfWordSuffix == nil || got != eow {
			return nil, nil, nil, "", fmt.Errorf("model.end_of_word_suffix %q: this tokenizer needs %q", got, eow)
		}
	}
	if p := m.ContinuingSubwordPrefix; p != nil && *p != "" {
		return nil, nil, nil, "", fmt.Errorf("model.continuing_subword_prefix %q: CLIP uses none", *p)
	}
	if len(m.Vocab) == 0 {
		return nil, nil, nil, "", errors.New("model.vocab is empty")
	}
	vocab := make(map[string]int32, len(m.Vocab)+len(doc.AddedTokens))
	for tok, id := range m.Vocab {
		if id < 0 || id >= maxVocab {
			return nil, nil, nil, "", fmt.Errorf("model.vocab[%q] = %d: id out of range", tok, id)
		}
		vocab[tok] = int32(id)
	}
	merges, err := parseMergesJSON(m.Merges)
	if err != nil {
		return nil, nil, nil, "", err
	}
	var added []addedToken
	for i, a := range doc.AddedTokens {
		if a.ID == nil || *a.ID < 0 || *a.ID >= maxVocab {
			return nil, nil, nil, "", fmt.Errorf("added_tokens[%d] (%q): missing or out-of-range id", i, a.Content)
		}
		if a.Content == "" {
			return nil, nil, nil, "", fmt.Errorf("added_tokens[%d]: empty content", i)
		}
		added = append(added, addedToken{content: a.Content, id: int32(*a.ID)})
		if _, ok := vocab[a.Content]; !ok {
			vocab[a.Content] = int32(*a.ID)
		}
	}
	unk := ""
	if m.UnkToken != nil {
		unk = *m.UnkToken
	}
	return vocab, merges, added, unk, nil
}

// parseMergesJSON accepts both spellings of model.merges: ["a b", ...]
// and [["a", "b"], ...].
func parseMergesJSON(raw json.RawMessage) ([][2]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, errors.New("model.merges is missing")
	}
	var asStrings []string
	if err := json.Unmarshal(raw, &asStrings); err == nil {
		out := make([][2]string, 0, len(asStrings))
		for i, s := range asStrings {
			a, b, ok := strings.Cut(s, " ")
			if !ok || a == "" || b == "" || strings.Contains(b, " ") {
				return nil, fmt.Errorf("model.merges[%d] %q: want two symbols separated by one space", i, s)
			}
			out = append(out, [2]string{a, b})
		}
		return out, nil
	}
	var asPairs [][]string
	if err := json.Unmarshal(raw, &asPairs); err != nil {
		return nil, fmt.Errorf("model.merges: want strings \"a b\" or pairs [\"a\", \"b\"]: %w", err)
	}
	out := make([][2]string, 0, len(asPairs))
	for i, p := range asPairs {
		if len(p) != 2 || p[0] == "" || p[1] == "" {
			return nil, fmt.Errorf("model.merges[%d]: want a pair of non-empty symbols", i)
		}
		out = append(out, [2]string{p[0], p[1]})
	}
	return out, nil
}

// readVocabMerges reads the vocab.json + merges.txt layout.
func readVocabMerges(dir string) (map[string]int32, [][2]string, error) {
	vpath := filepath.Join(dir, "vocab.json")
	data, err := os.ReadFile(vpath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("tokenizer: %s holds neither tokenizer.json nor vocab.json + merges.txt", dir)
		}
		return nil, nil, fmt.Errorf("tokenizer: %w", err)
	}
	var raw map[string]int64
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, nil, fmt.Errorf("tokenizer: %s: %w", vpath, err)
	}
	if len(raw) == 0 {
		return nil, nil, fmt.Errorf("tokenizer: %s: empty vocabulary", vpath)
	}
	vocab := make(map[string]int32, len(raw))
	for tok, id := range raw {
		if id < 0 || id >= maxVocab {
			return nil, nil, fmt.Errorf("tokenizer: %s: %q = %d: id out of range", vpath, tok, id)
		}
		vocab[tok] = int32(id)
	}
	mpath := filepath.Join(dir, "merges.txt")
	f, err := os.Open(mpath)
	if err != nil {
		return nil, nil, fmt.Errorf("tokenizer: %w", err)
	}
	defer f.Close()
	var merges [][2]string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimRight(sc.Text(), "\r")
		if s == "" || (line == 1 && strings.HasPrefix(s, "#version")) {
			continue
		}
		a, b, ok := strings.Cut(s, " ")
		if !ok || a == "" || b == "" || strings.Contains(b, " ") {
			return nil, nil, fmt.Errorf("tokenizer: %s:%d: %q: want two symbols separated by one space", mpath, line, s)
		}
		merges = append(merges, [2]string{a, b})
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("tokenizer: %s: %w", mpath, err)
	}
	return vocab, merges, nil
}

// build assembles a Tokenizer and checks that everything it refers to is
// in the vocabulary.
func build(vocab map[string]int32, merges [][2]string, added []addedToken, cfg config, unk string) (*Tokenizer, error) {
	size := int32(0)
	for _, id := range vocab {
		size = max(size, id+1)
	}
	for _, a := range added {
		size = max(size, a.id+1)
	}
	t := &Tokenizer{
		vocab:     vocab,
		tokens:    make([]string, size),
		merges:    make(map[pair]merge, len(merges)),
		byteChr:   byteLevelAlphabet(),
		chrByte:   make(map[rune]byte, 256),
		maxLength: cfg.maxLength,
		cache:     make(map[string][]int32),
	}
	for tok, id := range vocab {
		if t.tokens[id] != "" && t.tokens[id] != tok {
			// Two entries share an id; keep the smaller text so the
			// choice does not depend on map order.
			if tok > t.tokens[id] {
				continue
			}
		}
		t.tokens[id] = tok
	}
	for b, r := range t.byteChr {
		t.chrByte[r] = byte(b)
		t.byteID[b], t.byteEnd[b] = -1, -1
		if id, ok := vocab[string(r)]; ok {
			t.byteID[b] = id
		}
		if id, ok := vocab[string(r)+endOfWord]; ok {
			t.byteEnd[b] = id
		}
	}
	for i, m := range merges {
		a, okA := vocab[m[0]]
		b, okB := vocab[m[1]]
		id, okM := vocab[m[0]+m[1]]
		if !okA || !okB || !okM {
			return nil, fmt.Errorf("tokenizer: merge %d (%q %q) uses a symbol that is not in the vocabulary", i+1, m[0], m[1])
		}
		p := pair{a, b}
		if _, dup := t.merges[p]; !dup {
			t.merges[p] = merge{rank: int32(i), id: id}
		}
	}
	sort.SliceStable(added, func(i, j int) bool { return len(added[i].content) > len(added[j].content) })
	t.added = added
	lookup := func(field, tok string) (int32, error) {
		for _, a := range added {
			if a.content == tok {
				return a.id, nil
			}
		}
		if id, ok := vocab[tok]; ok {
			return id, nil
		}
		return 0, fmt.Errorf("tokenizer: %s %q is not in the vocabulary", field, tok)
	}
	var err error
	if t.bos, err = lookup("bos_token", cfg.bos); err != nil {
		return nil, err
	}
	if t.eos, err = lookup("eos_token", cfg.eos); err != nil {
		return nil, err
	}
	if t.pad, err = lookup("pad_token", cfg.pad); err != nil {
		return nil, err
	}
	if unk == "" {
		unk = cfg.eos
	}
	if t.unk, err = lookup("unk_token", unk); err != nil {
		return nil, err
	}
	return t, nil
}
