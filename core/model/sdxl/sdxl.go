// Package sdxl is the Stable Diffusion XL model family, base and refiner,
// as diffusers' StableDiffusionXLPipeline and StableDiffusionXLImg2ImgPipeline
// run it: two text encoders (CLIP ViT-L's penultimate hidden state and
// OpenCLIP ViT-bigG's, concatenated; the second's projected pooled output),
// the UNet's added text_time conditioning (micro-conditioning on sizes and
// crop, or the refiner's aesthetic score), and the SDXL VAE. Everything
// comes from the checkpoint's configs; nothing assumes SDXL's published
// sizes.
package sdxl

import (
	"context"
	"fmt"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/checkpoint"
	"github.com/kiln-project/kiln/core/conditioning"
	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/core/model/clip"
	"github.com/kiln-project/kiln/core/model/unet"
	"github.com/kiln-project/kiln/core/model/vae"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tokenizer"
)

// Defaults of diffusers' SDXL pipelines.
const (
	// DefaultAestheticScore and DefaultNegativeAestheticScore are the
	// refiner's aesthetic conditioning when a request gives none.
	DefaultAestheticScore         = 6.0
	DefaultNegativeAestheticScore = 2.5
)

// Model is an SDXL base or refiner with its networks on a backend. Like the
// backend it is not safe for concurrent use.
type Model struct {
	tok1, tok2 *tokenizer.Tokenizer // tok1 and te1 are nil for a refiner
	te1, te2   *clip.Model
	// UNet and VAE are the denoiser and the latent codec.
	UNet *unet.Model
	VAE  *vae.Model

	forceZeros, aesthetics bool
	timeIDs                int
}

// New builds the networks of an SDXL checkpoint on be (the VAE on vaeBE,
// which may be a higher-precision view of the same device).
func New(be, vaeBE backend.Backend, m *checkpoint.Model) (*Model, error) {
	return NewParts(func(kind string) backend.Backend {
		if kind == "vae" {
			return vaeBE
		}
		return be
	}, m)
}

// NewParts builds the networks of an SDXL checkpoint, each component on
// the backend parts gives for its kind ("text_encoder", "text_encoder_2",
// "unet", "vae"; the VAE's as it is, no precision view added).
func NewParts(parts func(kind string) backend.Backend, m *checkpoint.Model) (*Model, error) {
	if m.Family != checkpoint.FamilySDXL {
		return nil, fmt.Errorf("sdxl: the checkpoint holds a %q model", m.Family)
	}
	s := &Model{forceZeros: m.ForceZerosForEmptyPrompt, aesthetics: m.RequiresAestheticsScore}
	var err error
	if m.TextEncoder != nil {
		if s.tok1, err = m.Tokenizer(); err != nil {
			return nil, fmt.Errorf("sdxl: tokenizer: %w", err)
		}
		if s.te1, err = newEncoder(parts("text_encoder"), m.TextEncoderConfig, m.TextEncoder, false); err != nil {
			return nil, fmt.Errorf("sdxl: text encoder: %w", err)
		}
	}
	if s.tok2, err = m.Tokenizer2(); err != nil {
		return nil, fmt.Errorf("sdxl: tokenizer 2: %w", err)
	}
	if s.te2, err = newEncoder(parts("text_encoder_2"), m.TextEncoder2Config, m.TextEncoder2, true); err != nil {
		return nil, fmt.Errorf("sdxl: text encoder 2: %w", err)
	}
	ucfg, err := unet.ParseConfig(m.UNetConfig)
	if err != nil {
		return nil, fmt.Errorf("sdxl: %w", err)
	}
	if ucfg.AdditionEmbedType != unet.AdditionTextTime {
		return nil, fmt.Errorf("sdxl: the UNet has no text_time added conditioning")
	}
	if s.timeIDs, err = ucfg.TimeIDCount(s.te2.Config().ProjectionDim); err != nil {
		return nil, fmt.Errorf("sdxl: %w", err)
	}
	if want := s.timeIDCount(); s.timeIDs != want {
		return nil, fmt.Errorf("sdxl: the UNet takes %d time ids, the pipeline (requires_aesthetics_score %v) makes %d", s.timeIDs, s.aesthetics, want)
	}
	if got := s.ContextDim(); got != ucfg.ContextDim() {
		return nil, fmt.Errorf("sdxl: the text encoders give %d-wide context, the UNet attends to %d", got, ucfg.ContextDim())
	}
	if s.UNet, err = unet.New(parts("unet"), ucfg, m.UNet); err != nil {
		return nil, fmt.Errorf("sdxl: %w", err)
	}
	vcfg, err := vae.ParseConfig(m.VAEConfig)
	if err != nil {
		return nil, fmt.Errorf("sdxl: %w", err)
	}
	if c := vcfg.LatentChannels; ucfg.InChannels != c && ucfg.InChannels != 2*c+1 {
		return nil, fmt.Errorf("sdxl: unet takes %d input channels, vae makes %d latent channels (want %d, or %d for inpainting)",
			ucfg.InChannels, c, c, 2*c+1)
	}
	if s.VAE, err = vae.New(parts("vae"), vcfg, m.VAE); err != nil {
		return nil, fmt.Errorf("sdxl: %w", err)
	}
	return s, nil
}

func newEncoder(be backend.Backend, js []byte, w safetensors.Source, projection bool) (*clip.Model, error) {
	cfg, err := clip.ParseConfig(js)
	if err != nil {
		return nil, err
	}
	if cfg.WithProjection != projection {
		want := "CLIPTextModel"
		if projection {
			want = "CLIPTextModelWithProjection"
		}
		return nil, fmt.Errorf("config: architectures: want %s", want)
	}
	return clip.New(be, cfg, w)
}

// Refiner reports whether the model is a refiner: no first text encoder,
// aesthetic-score conditioning.
func (m *Model) Refiner() bool { return m.aesthetics }

// ContextDim is the width of the UNet's text context: both encoders'
// widths, or the second's alone for a refiner.
func (m *Model) ContextDim() int {
	d := m.te2.Config().HiddenSize
	if m.te1 != nil {
		d += m.te1.Config().HiddenSize
	}
	return d
}

// PooledDim is the width of the pooled text embedding.
func (m *Model) PooledDim() int { return m.te2.Config().ProjectionDim }

// TimeIDCount is the number of micro-conditioning values per image.
func (m *Model) TimeIDCount() int { return m.timeIDs }

func (m *Model) timeIDCount() int {
	if m.aesthetics {
		return 5
	}
	return 6
}

// Conditioning is one prompt's conditioning: Hidden (Length × Dim), the
// encoders' hidden states side by side, and Pooled, the second encoder's
// projected pooled output of the first chunk.
type Conditioning struct {
	Hidden      []float32
	Length, Dim int
	Pooled      []float32
	// Chunks are the second tokenizer's chunks (with emphasis weights).
	Chunks []conditioning.Chunk
}

// layer returns the hidden state SDXL conditions on: the penultimate
// layer's output, or for clip skip k ≥ 2 the output k−1 layers before the
// last (diffusers' hidden_states[-(clip_skip+2)] with clip_skip = k−1).
func layer(c *clip.Model, clipSkip int) (int, error) {
	l := c.Config().NumHiddenLayers + 1 - max(clipSkip, 2)
	if l < 1 {
		return 0, fmt.Errorf("sdxl: clip skip %d exceeds the text encoder's %d layers", clipSkip, c.Config().NumHiddenLayers)
	}
	return l, nil
}

// EncodePrompts returns the conditioning of a prompt. text goes to the first
// encoder and text2 (text when empty) to the second; a refiner, which has
// only the second, encodes text, as diffusers does. Emphasis weights apply
// to each encoder's rows; prompts longer than one chunk take further
// chunks, the encoder needing fewer padded with empty chunks.
func (m *Model) EncodePrompts(ctx context.Context, text, text2 string, opts conditioning.Options) (Conditioning, error) {
	return m.encode(ctx, text, text2, opts, 1)
}

// encode is Encode with at least minChunks chunks.
func (m *Model) encode(ctx context.Context, text, text2 string, opts conditioning.Options, minChunks int) (Conditioning, error) {
	if text2 == "" || m.te1 == nil {
		text2 = text
	}
	var c1 []conditioning.Chunk
	var err error
	if m.te1 != nil {
		if c1, err = conditioning.TokenizeFor(m.tok1, text, opts, lora.TextEncoder); err != nil {
			return Conditioning{}, fmt.Errorf("sdxl: %w", err)
		}
	}
	c2, err := conditioning.TokenizeFor(m.tok2, text2, opts, lora.TextEncoder2)
	if err != nil {
		return Conditioning{}, fmt.Errorf("sdxl: %w", err)
	}
	n := max(len(c1), len(c2), minChunks)
	if m.te1 != nil {
		if c1, err = padChunks(m.tok1, c1, n, opts); err != nil {
			return Conditioning{}, err
		}
	}
	if c2, err = padChunks(m.tok2, c2, n, opts); err != nil {
		return Conditioning{}, err
	}
	h2, pooled, err := m.encodeChunks(ctx, m.te2, c2, opts.ClipSkip)
	if err != nil {
		return Conditioning{}, err
	}
	proj := m.PooledDim()
	out := Conditioning{Hidden: h2, Dim: m.te2.Config().HiddenSize, Pooled: pooled[:proj:proj], Chunks: c2}
	out.Length = len(h2) / out.Dim
	if m.te1 == nil {
		return out, nil
	}
	h1, _, err := m.encodeChunks(ctx, m.te1, c1, opts.ClipSkip)
	if err != nil {
		return Conditioning{}, err
	}
	d1, d2 := m.te1.Config().HiddenSize, out.Dim
	cat := make([]float32, 0, out.Length*(d1+d2))
	for r := range out.Length {
		cat = append(cat, h1[r*d1:(r+1)*d1]...)
		cat = append(cat, h2[r*d2:(r+1)*d2]...)
	}
	out.Hidden, out.Dim = cat, d1+d2
	return out, nil
}

// padChunks appends empty-prompt chunks up to n.
func padChunks(tok *tokenizer.Tokenizer, cs []conditioning.Chunk, n int, opts conditioning.Options) ([]conditioning.Chunk, error) {
	for len(cs) < n {
		empty, err := conditioning.Tokenize(tok, "", opts)
		if err != nil {
			return nil, fmt.Errorf("sdxl: %w", err)
		}
		cs = append(cs, empty[0])
	}
	return cs, nil
}

// encodeChunks runs one encoder over chunks as one batch and applies their
// emphasis weights.
func (m *Model) encodeChunks(ctx context.Context, te *clip.Model, cs []conditioning.Chunk, clipSkip int) (hidden, pooled []float32, err error) {
	l, err := layer(te, clipSkip)
	if err != nil {
		return nil, nil, err
	}
	var ids []int32
	for _, c := range cs {
		ids = append(ids, c.IDs...)
	}
	inject := map[int][]float32{}
	for i, c := range cs {
		for pos, v := range c.Vectors {
			inject[i*len(c.IDs)+pos] = v
		}
	}
	if len(inject) > 0 {
		hidden, pooled, err = te.HiddenStatesInjected(ctx, ids, len(cs), l, inject)
	} else {
		hidden, pooled, err = te.HiddenStates(ctx, ids, len(cs), l)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("sdxl: %w", err)
	}
	d := te.Config().HiddenSize
	per := len(hidden) / len(cs)
	for i, c := range cs {
		conditioning.ApplyWeights(hidden[i*per:(i+1)*per], c.Weights, d)
	}
	return hidden, pooled, nil
}

// EncodePair returns the conditioning of a prompt and of its negative
// prompt, of equal length. The negative is zeros when its prompt is empty
// and the model zeroes empty prompts (force_zeros_for_empty_prompt, the
// base's setting), else the encoding of negative (negative2 defaulting to
// negative), as diffusers' encode_prompt does.
func (m *Model) EncodePair(ctx context.Context, prompt, prompt2, negative, negative2 string, opts conditioning.Options) (pos, neg Conditioning, err error) {
	if pos, err = m.EncodePrompts(ctx, prompt, prompt2, opts); err != nil {
		return pos, neg, err
	}
	if negative == "" && m.forceZeros {
		neg = Conditioning{Hidden: make([]float32, len(pos.Hidden)), Length: pos.Length, Dim: pos.Dim,
			Pooled: make([]float32, len(pos.Pooled))}
		return pos, neg, nil
	}
	chunks := pos.Length / m.tok2.MaxLength()
	if neg, err = m.encode(ctx, negative, negative2, opts, chunks); err != nil {
		return pos, neg, err
	}
	if neg.Length > pos.Length {
		if pos, err = m.encode(ctx, prompt, prompt2, opts, neg.Length/m.tok2.MaxLength()); err != nil {
			return pos, neg, err
		}
	}
	return pos, neg, nil
}
