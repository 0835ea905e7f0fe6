// Package qwen2 is the Qwen2 decoder-only language model as the text path
// of Qwen2.5-VL runs it (Qwen-Image's text encoder): token embedding, then
// layers of RMSNorm → grouped-query self-attention with rotary position
// embeddings (1-D: for text the multimodal RoPE's three position axes are
// equal) → residual, RMSNorm → SwiGLU MLP → residual, and a final RMSNorm.
// It returns the last hidden states, which is what diffusion pipelines
// condition on; the LM head and the vision tower are not loaded.
//
// Module paths are the checkpoint's: "layers.N.self_attn.q_proj.weight"
// under the language-model prefix ("model." in Qwen-Image's files,
// "model.language_model." in newer transformers' layout).
package qwen2

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/model/nn"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
)

// Config is the text model's architecture.
type Config struct {
	VocabSize        int
	HiddenSize       int
	IntermediateSize int
	Layers           int
	Heads            int
	KVHeads          int
	RMSNormEps       float64
	RopeTheta        float64
}

// HeadDim is the size of one attention head.
func (c Config) HeadDim() int { return c.HiddenSize / c.Heads }

type textConfig struct {
	VocabSize        int      `json:"vocab_size"`
	HiddenSize       int      `json:"hidden_size"`
	IntermediateSize int      `json:"intermediate_size"`
	Layers           int      `json:"num_hidden_layers"`
	Heads            int      `json:"num_attention_heads"`
	KVHeads          int      `json:"num_key_value_heads"`
	RMSNormEps       float64  `json:"rms_norm_eps"`
	RopeTheta        *float64 `json:"rope_theta"`
	HiddenAct        string   `json:"hidden_act"`
	UseSlidingWindow bool     `json:"use_sliding_window"`
	HeadDim          *int     `json:"head_dim"`
	Rope             *struct {
		Theta *float64 `json:"rope_theta"`
		Type  string   `json:"rope_type"`
		Kind  string   `json:"type"`
	} `json:"rope_parameters"`
	RopeScaling *struct {
		Type string `json:"rope_type"`
		Kind string `json:"type"`
	} `json:"rope_scaling"`
}

// ParseConfig reads a Qwen2 / Qwen2.5-VL config.json: the text fields at
// the top level (older files) or under "text_config". Settings this
// package does not implement are errors.
func ParseConfig(data []byte) (Config, error) {
	var top struct {
		Text *textConfig `json:"text_config"`
		textConfig
	}
	if err := json.Unmarshal(data, &top); err != nil {
		return Config{}, fmt.Errorf("qwen2 config: %w", err)
	}
	t := top.textConfig
	if top.Text != nil {
		t = *top.Text
	}
	c := Config{VocabSize: t.VocabSize, HiddenSize: t.HiddenSize, IntermediateSize: t.IntermediateSize,
		Layers: t.Layers, Heads: t.Heads, KVHeads: t.KVHeads, RMSNormEps: t.RMSNormEps, RopeTheta: 1e6}
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads
	}
	if t.RopeTheta != nil {
		c.RopeTheta = *t.RopeTheta
	}
	if t.Rope != nil {
		if t.Rope.Theta != nil {
			c.RopeTheta = *t.Rope.Theta
		}
		if t.Rope.Type != "" && t.Rope.Type != "default" {
			return Config{}, fmt.Errorf("qwen2 config: rope_type %q is not supported (want default)", t.Rope.Type)
		}
	}
	if s := t.RopeScaling; s != nil && s.Type != "" && s.Type != "default" && s.Type != "mrope" {
		return Config{}, fmt.Errorf("qwen2 config: rope_scaling type %q is not supported", s.Type)
	}
	switch {
	case t.HiddenAct != "silu":
		return Config{}, fmt.Errorf("qwen2 config: hidden_act %q is not supported (want silu)", t.HiddenAct)
	case t.UseSlidingWindow:
		return Config{}, fmt.Errorf("qwen2 config: use_sliding_window is not supported")
	case c.VocabSize < 1 || c.HiddenSize < 1 || c.IntermediateSize < 1 || c.Layers < 1 || c.Heads < 1:
		return Config{}, fmt.Errorf("qwen2 config: vocab_size, hidden_size, intermediate_size, num_hidden_layers and num_attention_heads must be positive")
	case c.HiddenSize%c.Heads != 0 || c.HeadDim()%2 != 0:
		return Config{}, fmt.Errorf("qwen2 config: hidden_size %d must split into %d heads of even size", c.HiddenSize, c.Heads)
	case c.KVHeads < 1 || c.Heads%c.KVHeads != 0:
		return Config{}, fmt.Errorf("qwen2 config: num_key_value_heads %d must divide num_attention_heads %d", c.KVHeads, c.Heads)
	case t.HeadDim != nil && *t.HeadDim != c.HeadDim():
		return Config{}, fmt.Errorf("qwen2 config: head_dim %d differs from hidden_size/num_attention_heads", *t.HeadDim)
	case c.RMSNormEps <= 0 || c.RopeTheta <= 0:
		return Config{}, fmt.Errorf("qwen2 config: rms_norm_eps and rope_theta must be positive")
	}
	return c, nil
}

// LanguageModel returns the text model's tensors of a Qwen2 / Qwen2.5-VL
// checkpoint, named as this package declares them (without the
// "model." or "model.language_model." prefix; the vision tower and the LM
// head are left out).
func LanguageModel(src safetensors.Source) (safetensors.Source, error) {
	for _, prefix := range []string{"model.language_model.", "model."} {
		if _, ok := src.Info(prefix + "embed_tokens.weight"); !ok {
			continue
		}
		entries := map[string]safetensors.ViewEntry{}
		for _, n := range src.Names() {
			rest, ok := strings.CutPrefix(n, prefix)
			if !ok || strings.HasPrefix(rest, "visual.") || strings.HasPrefix(rest, "language_model.") {
				continue
			}
			entries[rest] = safetensors.ViewEntry{From: n}
		}
		return safetensors.NewView(src, entries)
	}
	return nil, fmt.Errorf("qwen2: no text model in the checkpoint (neither model.embed_tokens.weight nor model.language_model.embed_tokens.weight)")
}

// Model is a Qwen2 text model with its weights on a backend.
type Model struct {
	cfg    Config
	be     backend.Backend
	ops    backend.TransformerOps
	ws     *nn.Weights
	embed  *nn.Weight
	layers []*layer
	norm   *nn.RMSNorm
	freqs  []float32
}

type layer struct {
	inNorm, postNorm       *nn.RMSNorm
	q, k, v, o             *nn.Linear
	kFull, vFull           [2]*tensor.Tensor // k/v projections repeated to every query head
	gate, up, down         *nn.Linear
	heads, kvHeads, headDm int
}

// New declares the model's weights for cfg, checks them against src (the
// language-model view, see LanguageModel) and uploads them to be.
func New(be backend.Backend, cfg Config, src safetensors.Source) (_ *Model, err error) {
	ops, err := backend.AsTransformer(be)
	if err != nil {
		return nil, fmt.Errorf("qwen2: %w", err)
	}
	m := declareModel(cfg)
	m.be, m.ops = be, ops
	ws := m.ws
	if err := ws.Load(be, src); err != nil {
		return nil, fmt.Errorf("qwen2: %w", err)
	}
	defer backend.Recover(&err)
	hd := cfg.HeadDim()
	for _, l := range m.layers {
		l.kFull = [2]*tensor.Tensor{m.repeatKV(l.k.W.T, hd), m.repeatKV(l.k.B.T, hd)}
		l.vFull = [2]*tensor.Tensor{m.repeatKV(l.v.W.T, hd), m.repeatKV(l.v.B.T, hd)}
	}
	return m, nil
}

// repeatKV repeats each key/value head's rows of w (kvHeads·D, …) for the
// query heads that share it (transformers' repeat_kv, applied to the
// projection instead of its output: the same numbers).
func (m *Model) repeatKV(w *tensor.Tensor, hd int) *tensor.Tensor {
	rep := m.cfg.Heads / m.cfg.KVHeads
	if rep == 1 {
		return w
	}
	src := m.be.ToFloat32(w)
	row := len(src) / (m.cfg.KVHeads * hd) // elements per output feature
	out := make([]float32, 0, len(src)*rep)
	for g := range m.cfg.KVHeads {
		head := src[g*hd*row : (g+1)*hd*row]
		for range rep {
			out = append(out, head...)
		}
	}
	s := w.Shape().Clone()
	s[0] *= rep
	return m.be.FromFloat32(s, out)
}

// Config returns the model's configuration.
func (m *Model) Config() Config { return m.cfg }

// Weights returns the declared weights.
func (m *Model) Weights() *nn.Weights { return m.ws }

// Forward runs the model over a batch of token sequences and returns each
// sequence's last hidden states (after the final norm), len(ids[b]) ×
// HiddenSize values per sequence. Sequences of unequal length run as one
// right-padded batch: with causal attention a token never sees the
// padding after it, so each result equals the sequence's own run.
func (m *Model) Forward(ctx context.Context, ids [][]int32) (out [][]float32, err error) {
	defer backend.Recover(&err)
	if len(ids) == 0 {
		return nil, nil
	}
	L := 0
	for _, s := range ids {
		L = max(L, len(s))
	}
	if L == 0 {
		return make([][]float32, len(ids)), nil
	}
	flat := make([]int32, 0, len(ids)*L)
	for b, s := range ids {
		for _, id := range s {
			if id < 0 || int(id) >= m.cfg.VocabSize {
				return nil, fmt.Errorf("qwen2: sequence %d: token id %d outside the vocabulary (%d)", b, id, m.cfg.VocabSize)
			}
		}
		flat = append(flat, s...)
		for range L - len(s) {
			flat = append(flat, 0)
		}
	}
	be, ops := m.be, m.ops
	pos := make([][]float32, L)
	for i := range pos {
		pos[i] = []float32{float32(i)}
	}
	c, s := nn.RopeTable(pos, [][]float32{m.freqs})
	half := m.cfg.HeadDim() / 2
	cos, sin := be.FromFloat32(tensor.Shape{L, half}, c), be.FromFloat32(tensor.Shape{L, half}, s)
	defer be.Free(cos, sin)
	x := be.Embedding(m.embed.T, flat, tensor.Shape{len(ids), L})
	for i, l := range m.layers {
		if err := ctx.Err(); err != nil {
			be.Free(x)
			return nil, fmt.Errorf("qwen2: layer %d: %w", i, err)
		}
		x = l.forward(be, ops, x, cos, sin)
	}
	x = nn.Swap(be, x, m.norm.Forward(ops, x))
	all := be.ToFloat32(x)
	be.Free(x)
	d := m.cfg.HiddenSize
	out = make([][]float32, len(ids))
	for b, s := range ids {
		out[b] = append([]float32(nil), all[b*L*d:(b*L+len(s))*d]...)
	}
	return out, nil
}

func (l *layer) forward(be backend.Backend, ops backend.TransformerOps, x, cos, sin *tensor.Tensor) *tensor.Tensor {
	h := l.inNorm.Forward(ops, x)
	q := l.q.Forward(be, h)
	k := be.Linear(h, l.kFull[0], l.kFull[1])
	v := be.Linear(h, l.vFull[0], l.vFull[1])
	be.Free(h)
	q = nn.Swap(be, q, ops.Rotary(q, cos, sin, l.heads, false))
	k = nn.Swap(be, k, ops.Rotary(k, cos, sin, l.heads, false))
	a := be.Attention(q, k, v, backend.AttentionParams{Heads: l.heads, Scale: float32(1 / math.Sqrt(float64(l.headDm))), Causal: true, Upcast: true})
	be.Free(q, k, v)
	o := nn.Swap(be, a, l.o.Forward(be, a))
	x = nn.Swap(be, x, be.Add(x, o))
	be.Free(o)
	h = l.postNorm.Forward(ops, x)
	g := l.gate.Forward(be, h)
	u := l.up.Forward(be, h)
	be.Free(h)
	g = nn.Swap(be, g, be.SiLU(g))
	gu := ops.Mul(g, u)
	be.Free(g, u)
	d := nn.Swap(be, gu, l.down.Forward(be, gu))
	x = nn.Swap(be, x, be.Add(x, d))
	be.Free(d)
	return x
}

// declareModel declares the weights of cfg (no backend yet).
func declareModel(cfg Config) *Model {
	ws := nn.NewWeights()
	m := &Model{cfg: cfg, ws: ws, freqs: nn.RopeFreqs(cfg.HeadDim(), cfg.RopeTheta)}
	m.embed = ws.Sub("embed_tokens").Get("weight", cfg.VocabSize, cfg.HiddenSize)
	hd, kv := cfg.HeadDim(), cfg.KVHeads*cfg.HeadDim()
	for i := range cfg.Layers {
		s := ws.Subf("layers.%d", i)
		a := s.Sub("self_attn")
		l := &layer{
			inNorm:   nn.NewRMSNorm(s, "input_layernorm", cfg.HiddenSize, cfg.RMSNormEps),
			q:        nn.NewLinear(a, "q_proj", cfg.HiddenSize, cfg.HiddenSize, true),
			k:        nn.NewLinear(a, "k_proj", cfg.HiddenSize, kv, true),
			v:        nn.NewLinear(a, "v_proj", cfg.HiddenSize, kv, true),
			o:        nn.NewLinear(a, "o_proj", cfg.HiddenSize, cfg.HiddenSize, false),
			postNorm: nn.NewRMSNorm(s, "post_attention_layernorm", cfg.HiddenSize, cfg.RMSNormEps),
			gate:     nn.NewLinear(s.Sub("mlp"), "gate_proj", cfg.HiddenSize, cfg.IntermediateSize, false),
			up:       nn.NewLinear(s.Sub("mlp"), "up_proj", cfg.HiddenSize, cfg.IntermediateSize, false),
			down:     nn.NewLinear(s.Sub("mlp"), "down_proj", cfg.IntermediateSize, cfg.HiddenSize, false),
			heads:    cfg.Heads, kvHeads: cfg.KVHeads, headDm: hd,
		}
		m.layers = append(m.layers, l)
	}
	m.norm = nn.NewRMSNorm(ws, "norm", cfg.HiddenSize, cfg.RMSNormEps)
	return m
}

// WeightInfos lists the tensors (names, shapes; dtype F32) a checkpoint
// of cfg holds, named as New declares them (for a synthetic random-weight model).
func WeightInfos(cfg Config) []safetensors.TensorInfo { return declareModel(cfg).ws.Infos() }
