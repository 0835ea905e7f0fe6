// Package conditioning turns prompt text into the text encoder's output
// that conditions the UNet: the prompt is parsed for emphasis, tokenized
// into 77-token chunks (BOS, up to 75 tokens, EOS, padding), encoded, and
// the emphasis weights are applied to the encoder output as AUTOMATIC1111
// does: each token's embedding is scaled by its weight, then the whole
// chunk is rescaled so that its mean is what it was before weighting.
package conditioning

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/core/model/clip"
	"github.com/kiln-project/kiln/core/prompt"
	"github.com/kiln-project/kiln/core/tokenizer"
)

// Options select how a prompt becomes conditioning.
type Options struct {
	// ClipSkip takes the hidden state ClipSkip−1 layers before the last
	// (0 and 1 both mean the last layer).
	ClipSkip int
	// Emphasis parses the (word:1.2) / (word) / [word] / BREAK syntax; when
	// off the text is tokenized literally, brackets included.
	Emphasis bool
	// LongPrompts encodes prompts beyond 75 tokens in further 75-token
	// chunks concatenated along the sequence (and honours BREAK); when off
	// the prompt is truncated to one chunk.
	LongPrompts bool
	// Adapters identifies the text-encoder LoRAs and embeddings in effect
	// (names, hashes, weights); "" for none. It is part of every cache key
	// of an encoding.
	Adapters string
	// Text2 is the prompt for a family's second text encoder (SDXL's
	// prompt_2 / negative_prompt_2); "" gives it the same text. It is part
	// of every cache key of an encoding.
	Text2 string
	// Embeddings are textual inversions the prompt may name: where the
	// tokens of an embedding's name appear they are replaced by its
	// vectors for the encoder's namespace (see Encoder.SetNamespace).
	Embeddings []*lora.Embedding
}

// DefaultOptions are the settings for users: emphasis and long prompts on.
func DefaultOptions() Options { return Options{Emphasis: true, LongPrompts: true} }

// Chunk is one encoder input of the tokenizer's MaxLength() tokens with
// the weight of each (1 for BOS, EOS and padding).
type Chunk struct {
	IDs     []int32
	Weights []float32
	// Vectors maps positions of IDs to injected input embeddings
	// (textual inversion); nil when there are none.
	Vectors map[int][]float32
}

// Weighted reports whether any token of the chunk has a weight other than 1.
func (c Chunk) Weighted() bool {
	for _, w := range c.Weights {
		if w != 1 {
			return true
		}
	}
	return false
}

// Tokenize turns a prompt into weighted chunks. There is always at least
// one chunk; an empty prompt gives BOS, EOS and padding.
func Tokenize(tok *tokenizer.Tokenizer, text string, opts Options) ([]Chunk, error) {
	return tokenize(tok, text, opts, lora.TextEncoder)
}

// TokenizeFor is Tokenize for the text encoder of namespace ns
// (lora.TextEncoder, lora.TextEncoder2): embeddings named in the prompt
// carry that encoder's vectors.
func TokenizeFor(tok *tokenizer.Tokenizer, text string, opts Options, ns string) ([]Chunk, error) {
	return tokenize(tok, text, opts, ns)
}

// tokenize is Tokenize with the embeddings' vectors for namespace ns.
func tokenize(tok *tokenizer.Tokenizer, text string, opts Options, ns string) ([]Chunk, error) {
	segs := prompt.Literal(text)
	if opts.Emphasis {
		segs = prompt.Parse(text)
	}
	room := tok.MaxLength() - 2
	var (
		chunks  []Chunk
		ids     []int32
		weights []float32
	)
	vecs := map[int][]float32{}
	closeChunk := func() {
		c := frame(tok, ids, weights)
		if len(vecs) > 0 {
			c.Vectors = vecs
			vecs = map[int][]float32{}
		}
		chunks = append(chunks, c)
		ids, weights = ids[:0], weights[:0]
	}
segments:
	for _, s := range segs {
		if s.Break {
			if opts.LongPrompts {
				closeChunk()
			}
			continue
		}
		w := float32(s.Weight)
		if math.IsNaN(s.Weight) || math.IsInf(float64(w), 0) {
			return nil, fmt.Errorf("conditioning: weight %v of %q is not a finite number", s.Weight, s.Text)
		}
		for _, t := range findEmbeddings(tok, tok.Encode(s.Text), opts.Embeddings, ns) {
			if len(ids) == room {
				if !opts.LongPrompts {
					break segments
				}
				closeChunk()
			}
			if t.vec != nil {
				vecs[len(ids)+1] = t.vec // +1: after BOS
			}
			ids = append(ids, t.id)
			weights = append(weights, w)
		}
	}
	if len(ids) > 0 || len(chunks) == 0 {
		closeChunk()
	}
	return chunks, nil
}

// frame surrounds ids with BOS and EOS and pads them to MaxLength().
func frame(tok *tokenizer.Tokenizer, ids []int32, weights []float32) Chunk {
	n := tok.MaxLength()
	c := Chunk{IDs: tok.Frame(ids), Weights: make([]float32, n)}
	for i := range c.Weights {
		c.Weights[i] = 1
	}
	copy(c.Weights[1:], weights)
	return c
}

// Encoder turns prompts into conditioning with one tokenizer and text
// encoder. It is not safe for concurrent use (the model's backend is not).
type Encoder struct {
	tok   *tokenizer.Tokenizer
	model *clip.Model
	ns    string // embedding namespace; "" is lora.TextEncoder
}

// SetNamespace selects which of an embedding's vector sets this encoder
// uses (lora.TextEncoder2 for SDXL's second encoder).
func (e *Encoder) SetNamespace(ns string) { e.ns = ns }

func (e *Encoder) namespace() string {
	if e.ns == "" {
		return lora.TextEncoder
	}
	return e.ns
}

// New pairs a tokenizer with a text encoder, checking that the encoder
// accepts every sequence the tokenizer makes.
func New(tok *tokenizer.Tokenizer, model *clip.Model) (*Encoder, error) {
	cfg := model.Config()
	if tok.MaxLength() > cfg.MaxPositionEmbeddings {
		return nil, fmt.Errorf("conditioning: tokenizer length %d exceeds the text encoder's max_position_embeddings %d", tok.MaxLength(), cfg.MaxPositionEmbeddings)
	}
	if tok.VocabSize() > cfg.VocabSize {
		return nil, fmt.Errorf("conditioning: tokenizer has %d tokens, the text encoder's vocab_size is %d", tok.VocabSize(), cfg.VocabSize)
	}
	return &Encoder{tok: tok, model: model}, nil
}

// Model returns the encoder's text model.
func (e *Encoder) Model() *clip.Model { return e.model }

// Tokenizer returns the encoder's tokenizer.
func (e *Encoder) Tokenizer() *tokenizer.Tokenizer { return e.tok }

// Dim returns the width D of the conditioning.
func (e *Encoder) Dim() int { return e.model.Config().HiddenSize }

// Result is a prompt's conditioning.
type Result struct {
	Hidden []float32 // (1, Length, Dim), weights applied
	Length int       // MaxLength() × chunks
	Dim    int
	Chunks []Chunk
	// Pooled is the pooled output (Dim) of the first chunk, without
	// weights, as SDXL uses it.
	Pooled []float32
}

// Encode returns the conditioning (1, L, D) of text with L = 77·chunks.
func (e *Encoder) Encode(ctx context.Context, text string, opts Options) ([]float32, error) {
	r, err := e.EncodeResult(ctx, text, opts)
	return r.Hidden, err
}

// EncodeResult encodes text and returns the conditioning with its layout,
// chunks and pooled output. All chunks go through the encoder as one batch.
func (e *Encoder) EncodeResult(ctx context.Context, text string, opts Options) (Result, error) {
	chunks, err := tokenize(e.tok, text, opts, e.namespace())
	if err != nil {
		return Result{}, err
	}
	n := e.tok.MaxLength()
	ids := make([]int32, 0, n*len(chunks))
	for _, c := range chunks {
		ids = append(ids, c.IDs...)
	}
	inject := map[int][]float32{}
	for i, c := range chunks {
		for pos, v := range c.Vectors {
			inject[i*n+pos] = v
		}
	}
	var hidden, pooled []float32
	if len(inject) > 0 {
		hidden, pooled, err = e.model.EncodeInjected(ctx, ids, len(chunks), opts.ClipSkip, inject)
	} else {
		hidden, pooled, err = e.model.Encode(ctx, ids, len(chunks), opts.ClipSkip)
	}
	if err != nil {
		return Result{}, fmt.Errorf("conditioning: %w", err)
	}
	d := e.Dim()
	for i, c := range chunks {
		ApplyWeights(hidden[i*n*d:(i+1)*n*d], c.Weights, d)
	}
	return Result{Hidden: hidden, Length: n * len(chunks), Dim: d, Chunks: chunks, Pooled: pooled[:d]}, nil
}

// ApplyWeights applies emphasis to one chunk z (len(weights) rows of d) in
// place, as AUTOMATIC1111 does: every row is multiplied by its weight,
// then the chunk by mean_before / mean_after so that its mean is kept.
// A chunk whose weights are all 1 is left untouched; if the weighted mean
// is zero the rescaling is skipped.
func ApplyWeights(z []float32, weights []float32, d int) {
	if !(Chunk{Weights: weights}).Weighted() {
		return
	}
	before := mean(z)
	for r, w := range weights {
		if w == 1 {
			continue
		}
		row := z[r*d : (r+1)*d]
		for i := range row {
			row[i] *= w
		}
	}
	after := mean(z)
	if after == 0 {
		return
	}
	s := float32(before / after)
	for i := range z {
		z[i] *= s
	}
}

// mean is the average of x, summed in float64.
func mean(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v)
	}
	return s / float64(len(x))
}

// token is one prompt token, or an embedding vector in place of tokens.
type token struct {
	id  int32
	vec []float32
}

// findEmbeddings replaces each occurrence of an embedding's name (as the
// tokenizer spells it) in ids by the embedding's vectors for namespace
// ns, as AUTOMATIC1111 matches embeddings in the token stream; the
// placeholder id is the name's first token. Longer names win.
func findEmbeddings(tok *tokenizer.Tokenizer, ids []int32, embs []*lora.Embedding, ns string) []token {
	type trigger struct {
		ids []int32
		e   *lora.Embedding
	}
	var trs []trigger
	for _, e := range embs {
		if t := tok.Encode(e.Name); len(t) > 0 && e.Vectors[ns] != nil {
			trs = append(trs, trigger{t, e})
		}
	}
	slices.SortStableFunc(trs, func(a, b trigger) int { return len(b.ids) - len(a.ids) })
	out := make([]token, 0, len(ids))
next:
	for i := 0; i < len(ids); {
		for _, t := range trs {
			if i+len(t.ids) <= len(ids) && slices.Equal(ids[i:i+len(t.ids)], t.ids) {
				v := t.e.Vectors[ns]
				d := len(v) / t.e.N
				for k := 0; k < t.e.N; k++ {
					out = append(out, token{id: t.ids[0], vec: v[k*d : (k+1)*d]})
				}
				i += len(t.ids)
				continue next
			}
		}
		out = append(out, token{id: ids[i]})
		i++
	}
	return out
}
