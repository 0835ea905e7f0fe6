// Package clip is the CLIP text transformer that turns token ids into the
// conditioning of Stable Diffusion: token and position embeddings, pre-LN
// blocks of causal self-attention and an MLP (quick_gelu or gelu), and a
// final layer norm, and for CLIPTextModelWithProjection (SDXL's second
// encoder) the text projection of the pooled output. It computes only
// through backend.Backend; the weights are named as in the transformers
// checkpoint, with or without the "text_model." prefix.
package clip

import (
	"context"
	"fmt"
	"math"
	"strconv"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/model/nn"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
)

// Model is a CLIP text encoder with its weights on a backend. Like the
// backend it is not safe for concurrent use.
type Model struct {
	be     backend.Backend
	cfg    Config
	tokEmb *tensor.Tensor // (vocab, D)
	posEmb *tensor.Tensor // (positions, D)
	layers []block
	finalW *tensor.Tensor
	finalB *tensor.Tensor
	proj   *tensor.Tensor // (projection_dim, D) text_projection; nil without
	// adapters holds per-request adapters (LoRA) by weight; see SetAdapter.
	adapters map[*tensor.Tensor]nn.Adapter
	// inject holds the vectors of one EncodeInjected call.
	inject map[int][]float32
}

// block holds the weights of one transformer layer.
type block struct {
	ln1W, ln1B         *tensor.Tensor
	qW, qB, kW, kB     *tensor.Tensor
	vW, vB, outW, outB *tensor.Tensor
	ln2W, ln2B         *tensor.Tensor
	fc1W, fc1B         *tensor.Tensor
	fc2W, fc2B         *tensor.Tensor
}

// weightSpec names one tensor the model needs and where it goes.
type weightSpec struct {
	name  string
	shape tensor.Shape
	dst   **tensor.Tensor
}

// New checks every weight in w against cfg (presence, shape, dtype) before
// loading any, then uploads them to be. The first problem found is
// returned, naming the tensor.
func New(be backend.Backend, cfg Config, w safetensors.Source) (_ *Model, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	prefix := ""
	if _, ok := w.Info("text_model.embeddings.token_embedding.weight"); ok {
		prefix = "text_model."
	}
	m := &Model{be: be, cfg: cfg, layers: make([]block, cfg.NumHiddenLayers)}
	specs := m.specs(prefix)
	dtypes := make([]tensor.DType, len(specs))
	for i, s := range specs {
		info, ok := w.Info(s.name)
		if !ok {
			return nil, fmt.Errorf("clip: weight %s is missing", s.name)
		}
		if !tensor.Shape(info.Shape).Equal(s.shape) {
			return nil, fmt.Errorf("clip: weight %s has shape %v, the config (hidden_size %d, intermediate_size %d, vocab_size %d, max_position_embeddings %d) needs %v",
				s.name, tensor.Shape(info.Shape), cfg.HiddenSize, cfg.IntermediateSize, cfg.VocabSize, cfg.MaxPositionEmbeddings, s.shape)
		}
		switch info.DType {
		case "F32":
			dtypes[i] = tensor.F32
		case "F16":
			dtypes[i] = tensor.F16
		case "BF16":
			dtypes[i] = tensor.BF16
		default:
			return nil, fmt.Errorf("clip: weight %s has dtype %s; want F32, F16 or BF16", s.name, info.DType)
		}
	}
	defer backend.Recover(&err)
	for i, s := range specs {
		raw, err := w.Bytes(s.name)
		if err != nil {
			return nil, fmt.Errorf("clip: load %s: %w", s.name, err)
		}
		*s.dst = be.Upload(s.shape, dtypes[i], raw)
	}
	return m, nil
}

// specs lists every weight with its expected shape.
func (m *Model) specs(prefix string) []weightSpec {
	c := m.cfg
	d, f := c.HiddenSize, c.IntermediateSize
	vec := tensor.Shape{d}
	sq := tensor.Shape{d, d}
	specs := []weightSpec{
		{prefix + "embeddings.token_embedding.weight", tensor.Shape{c.VocabSize, d}, &m.tokEmb},
		{prefix + "embeddings.position_embedding.weight", tensor.Shape{c.MaxPositionEmbeddings, d}, &m.posEmb},
	}
	for i := range m.layers {
		l := &m.layers[i]
		p := prefix + "encoder.layers." + strconv.Itoa(i) + "."
		specs = append(specs,
			weightSpec{p + "layer_norm1.weight", vec, &l.ln1W},
			weightSpec{p + "layer_norm1.bias", vec, &l.ln1B},
			weightSpec{p + "self_attn.q_proj.weight", sq, &l.qW},
			weightSpec{p + "self_attn.q_proj.bias", vec, &l.qB},
			weightSpec{p + "self_attn.k_proj.weight", sq, &l.kW},
			weightSpec{p + "self_attn.k_proj.bias", vec, &l.kB},
			weightSpec{p + "self_attn.v_proj.weight", sq, &l.vW},
			weightSpec{p + "self_attn.v_proj.bias", vec, &l.vB},
			weightSpec{p + "self_attn.out_proj.weight", sq, &l.outW},
			weightSpec{p + "self_attn.out_proj.bias", vec, &l.outB},
			weightSpec{p + "layer_norm2.weight", vec, &l.ln2W},
			weightSpec{p + "layer_norm2.bias", vec, &l.ln2B},
			weightSpec{p + "mlp.fc1.weight", tensor.Shape{f, d}, &l.fc1W},
			weightSpec{p + "mlp.fc1.bias", tensor.Shape{f}, &l.fc1B},
			weightSpec{p + "mlp.fc2.weight", tensor.Shape{d, f}, &l.fc2W},
			weightSpec{p + "mlp.fc2.bias", vec, &l.fc2B},
		)
	}
	specs = append(specs,
		weightSpec{prefix + "final_layer_norm.weight", vec, &m.finalW},
		weightSpec{prefix + "final_layer_norm.bias", vec, &m.finalB},
	)
	if c.WithProjection {
		specs = append(specs, weightSpec{"text_projection.weight", tensor.Shape{c.ProjectionDim, d}, &m.proj})
	}
	return specs
}

// Config returns the model's configuration.
func (m *Model) Config() Config { return m.cfg }

// Encode runs the text encoder over batch sequences of token ids laid out
// one after another (len(ids) = batch·L, L ≤ max_position_embeddings).
//
// hidden (batch, L, hidden_size) is the final layer norm applied to the
// output of the last layer when clipSkip is 0 or 1, and to the output
// clipSkip−1 layers before the last otherwise. pooled (batch,
// hidden_size) is always taken from the last layer's normalised output at
// the end-of-text position: the first id equal to eos_token_id, or, for
// configs with the legacy eos_token_id 2, the largest id.
func (m *Model) Encode(ctx context.Context, ids []int32, batch int, clipSkip int) (hidden, pooled []float32, err error) {
	c := m.cfg
	if clipSkip < 0 || clipSkip > c.NumHiddenLayers {
		return nil, nil, fmt.Errorf("clip: encode: clip skip %d: want 0 to num_hidden_layers (%d)", clipSkip, c.NumHiddenLayers)
	}
	return m.run(ctx, ids, batch, c.NumHiddenLayers-max(clipSkip, 1)+1, true, false)
}

// HiddenStates runs the text encoder like Encode and returns transformers'
// hidden_states[layer] (1 ≤ layer ≤ num_hidden_layers): the output of the
// first layer layers as it is, without the final layer norm (SDXL
// conditions on layer num_hidden_layers−1). pooled is the last layer's
// normalised output at the end-of-text position, through text_projection
// for a CLIPTextModelWithProjection (its text_embeds).
func (m *Model) HiddenStates(ctx context.Context, ids []int32, batch, layer int) (hidden, pooled []float32, err error) {
	if layer < 1 || layer > m.cfg.NumHiddenLayers {
		return nil, nil, fmt.Errorf("clip: hidden states of layer %d: want 1 to num_hidden_layers (%d)", layer, m.cfg.NumHiddenLayers)
	}
	return m.run(ctx, ids, batch, layer, false, m.proj != nil)
}

// run embeds ids, runs the layers and returns the output after keepAfter
// layers (through the final layer norm when norm) and the pooled output
// (projected when project).
func (m *Model) run(ctx context.Context, ids []int32, batch, keepAfter int, norm, project bool) (hidden, pooled []float32, err error) {
	c := m.cfg
	if batch <= 0 || len(ids) == 0 || len(ids)%batch != 0 {
		return nil, nil, fmt.Errorf("clip: encode: %d ids do not split into %d sequences", len(ids), batch)
	}
	L := len(ids) / batch
	if L > c.MaxPositionEmbeddings {
		return nil, nil, fmt.Errorf("clip: encode: sequence length %d exceeds max_position_embeddings %d", L, c.MaxPositionEmbeddings)
	}
	for i, id := range ids {
		if id < 0 || int(id) >= c.VocabSize {
			return nil, nil, fmt.Errorf("clip: encode: token %d at position %d is outside the vocabulary (vocab_size %d)", id, i, c.VocabSize)
		}
	}
	defer func() {
		if err != nil {
			hidden, pooled = nil, nil
		}
	}()
	defer backend.Recover(&err)
	be := m.be

	x := be.Embedding(m.tokEmb, ids, tensor.Shape{batch, L})
	if len(m.inject) > 0 {
		x = m.injectVectors(be, x, ids, batch, L)
	}
	positions := make([]int32, L)
	for i := range positions {
		positions[i] = int32(i)
	}
	pos := be.Embedding(m.posEmb, positions, tensor.Shape{1, L})
	pos2 := be.Reshape(pos, tensor.Shape{L, c.HiddenSize})
	h := be.AddBroadcast(x, pos2)
	be.Free(x, pos, pos2)

	var kept *tensor.Tensor
	for i := range m.layers {
		if err := ctx.Err(); err != nil {
			be.Free(h)
			if kept != nil && kept != h {
				be.Free(kept)
			}
			return nil, nil, fmt.Errorf("clip: encode: %w", err)
		}
		next := m.layers[i].forward(be, h, c, m.adapters)
		if i+1 == keepAfter && (i+1 < len(m.layers) || !norm) {
			kept = next
		}
		if h != kept {
			be.Free(h)
		}
		h = next
	}
	eps := float32(c.LayerNormEps)
	last := be.LayerNorm(h, m.finalW, m.finalB, eps)
	if h != kept {
		be.Free(h)
	}
	out := last
	if kept != nil {
		out = kept
		if norm {
			out = be.LayerNorm(kept, m.finalW, m.finalB, eps)
			be.Free(kept)
		}
	}
	p := be.GatherRows(last, m.eosPositions(ids, batch, L))
	if project {
		p = nn.Swap(be, p, linear(be, m.adapters, p, m.proj, nil))
	}
	pooled = be.ToFloat32(p)
	hidden = be.ToFloat32(out)
	be.Free(p, last)
	if out != last {
		be.Free(out)
	}
	return hidden, pooled, nil
}

// eosPositions finds, per sequence, the row the pooled output is read from.
func (m *Model) eosPositions(ids []int32, batch, L int) []int {
	rows := make([]int, batch)
	eos := int32(m.cfg.EOSTokenID)
	for b := range rows {
		seq := ids[b*L : (b+1)*L]
		if eos == 2 {
			// Legacy configs: transformers takes argmax(ids), which lands on
			// the end-of-text token because it has the largest id.
			for i, id := range seq {
				if id > seq[rows[b]] {
					rows[b] = i
				}
			}
			continue
		}
		for i, id := range seq {
			if id == eos {
				rows[b] = i
				break
			}
		}
	}
	return rows
}

// forward runs one pre-LN transformer layer: x + attn(ln1(x)), then
// + mlp(ln2(·)).
func (l *block) forward(be backend.Backend, x *tensor.Tensor, c Config, ad map[*tensor.Tensor]nn.Adapter) *tensor.Tensor {
	eps := float32(c.LayerNormEps)
	h := be.LayerNorm(x, l.ln1W, l.ln1B, eps)
	q := linear(be, ad, h, l.qW, l.qB)
	k := linear(be, ad, h, l.kW, l.kB)
	v := linear(be, ad, h, l.vW, l.vB)
	be.Free(h)
	a := be.Attention(q, k, v, backend.AttentionParams{
		Heads:  c.NumAttentionHeads,
		Scale:  float32(1 / math.Sqrt(float64(c.HeadDim()))),
		Causal: true,
		Upcast: true,
	})
	be.Free(q, k, v)
	o := linear(be, ad, a, l.outW, l.outB)
	be.Free(a)
	x1 := be.Add(x, o)
	be.Free(o)

	h = be.LayerNorm(x1, l.ln2W, l.ln2B, eps)
	f := linear(be, ad, h, l.fc1W, l.fc1B)
	be.Free(h)
	var g *tensor.Tensor
	if c.HiddenAct == "gelu" {
		g = be.GELU(f)
	} else {
		g = be.QuickGELU(f)
	}
	be.Free(f)
	f2 := linear(be, ad, g, l.fc2W, l.fc2B)
	be.Free(g)
	out := be.Add(x1, f2)
	be.Free(x1, f2)
	return out
}
