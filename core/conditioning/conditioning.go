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
}

// DefaultOptions are the settings for users: emphasis and long prompts on.
func DefaultOptions() Options { return Options{Emphasis: true, LongPrompts: true} }

// Chunk is one encoder input of the tokenizer's MaxLength() tokens with
// the weight of each (1 for BOS, EOS and padding).
type Chunk struct {
	IDs     []int32
	Weights []float32
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
	closeChunk := func() {
		chunks = append(chunks, frame(tok, ids, weights))
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
		for _, id := range tok.Encode(s.Text) {
			if len(ids) == room {
				if !opts.LongPrompts {
					break segments
				}
				closeChunk()
			}
			ids = append(ids, id)
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
	chunks, err := Tokenize(e.tok, text, opts)
	if err != nil {
		return Result{}, err
	}
	n := e.tok.MaxLength()
	ids := make([]int32, 0, n*len(chunks))
	for _, c := range chunks {
		ids = append(ids, c.IDs...)
	}
	hidden, pooled, err := e.model.Encode(ctx, ids, len(chunks), opts.ClipSkip)
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
