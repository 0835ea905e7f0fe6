package clip

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/model/nn"
	"github.com/kiln-project/kiln/core/tensor"
)

// modulePrefix is the prefix every module name carries, whether or not the
// checkpoint's names have it (as transformers names CLIPTextModel's).
const modulePrefix = "text_model."

// Modules lists the encoder's linear layers under their transformers
// module paths ("text_model.encoder.layers.0.self_attn.q_proj", and
// "text_projection" for CLIPTextModelWithProjection).
func (m *Model) Modules() []nn.Module {
	var out []nn.Module
	for _, s := range m.specs(modulePrefix) {
		name, ok := strings.CutSuffix(s.name, ".weight")
		if !ok || len(s.shape) != 2 || strings.Contains(name, "embeddings.") {
			continue
		}
		out = append(out, nn.Module{Name: name, Shape: s.shape.Clone()})
	}
	return out
}

// SetAdapter installs a (nil: removes the) adapter on the linear module
// name (see Modules); it reports whether the module exists.
func (m *Model) SetAdapter(name string, a nn.Adapter) bool {
	for _, s := range m.specs(modulePrefix) {
		if s.name != name+".weight" || len(s.shape) != 2 || strings.Contains(name, "embeddings.") {
			continue
		}
		if a == nil {
			delete(m.adapters, *s.dst)
			return true
		}
		if m.adapters == nil {
			m.adapters = map[*tensor.Tensor]nn.Adapter{}
		}
		m.adapters[*s.dst] = a
		return true
	}
	return false
}

// linear is be.Linear followed by the weight's adapter, if any.
func linear(be backend.Backend, ad map[*tensor.Tensor]nn.Adapter, x, w, b *tensor.Tensor) *tensor.Tensor {
	y := be.Linear(x, w, b)
	if a := ad[w]; a != nil {
		return a.Adapt(be, x, y, nil)
	}
	return y
}

// EncodeInjected is Encode with some token vectors replaced: inject maps a
// position of ids (flattened over the batch) to the input embedding used
// there instead of the token's (a textual-inversion vector, hidden-size
// values). The position embeddings are added as usual.
func (m *Model) EncodeInjected(ctx context.Context, ids []int32, batch, clipSkip int, inject map[int][]float32) (hidden, pooled []float32, err error) {
	if err := m.setInject(ids, inject); err != nil {
		return nil, nil, err
	}
	defer func() { m.inject = nil }()
	return m.Encode(ctx, ids, batch, clipSkip)
}

// HiddenStatesInjected is HiddenStates with token vectors replaced as in
// EncodeInjected.
func (m *Model) HiddenStatesInjected(ctx context.Context, ids []int32, batch, layer int, inject map[int][]float32) (hidden, pooled []float32, err error) {
	if err := m.setInject(ids, inject); err != nil {
		return nil, nil, err
	}
	defer func() { m.inject = nil }()
	return m.HiddenStates(ctx, ids, batch, layer)
}

// TokenEmbedding returns the input embedding of token id (hidden-size
// values), e.g. to build an embedding equal to a word.
func (m *Model) TokenEmbedding(id int32) (v []float32, err error) {
	if id < 0 || int(id) >= m.cfg.VocabSize {
		return nil, fmt.Errorf("clip: token %d is outside the vocabulary", id)
	}
	defer backend.Recover(&err)
	t := m.be.Embedding(m.tokEmb, []int32{id}, tensor.Shape{1, 1})
	defer m.be.Free(t)
	return m.be.ToFloat32(t), nil
}

// setInject checks and sets the vectors of one injected call.
func (m *Model) setInject(ids []int32, inject map[int][]float32) error {
	d := m.cfg.HiddenSize
	for pos, v := range inject {
		if pos < 0 || pos >= len(ids) || len(v) != d {
			return fmt.Errorf("clip: encode: injected vector at position %d (%d values) does not fit %d ids of width %d", pos, len(v), len(ids), d)
		}
	}
	m.inject = inject
	return nil
}

// injectVectors returns the token embeddings x (batch, L, D) with the
// vectors of m.inject at their positions: x plus a correction gathered from
// a small table whose row 0 is zero and whose row k+1 is the k-th injected
// vector minus the embedding of the token it replaces.
func (m *Model) injectVectors(be backend.Backend, x *tensor.Tensor, ids []int32, batch, L int) *tensor.Tensor {
	d := m.cfg.HiddenSize
	positions := make([]int, 0, len(m.inject))
	for pos := range m.inject {
		positions = append(positions, pos)
	}
	slices.Sort(positions)
	replaced := make([]int32, len(positions))
	for k, pos := range positions {
		replaced[k] = ids[pos]
	}
	te := be.Embedding(m.tokEmb, replaced, tensor.Shape{1, len(replaced)})
	old := be.ToFloat32(te)
	be.Free(te)
	table := make([]float32, (len(positions)+1)*d)
	index := make([]int32, len(ids))
	for k, pos := range positions {
		row := table[(k+1)*d : (k+2)*d]
		for i, v := range m.inject[pos] {
			row[i] = v - old[k*d+i]
		}
		index[pos] = int32(k + 1)
	}
	tt := be.FromFloat32(tensor.Shape{len(positions) + 1, d}, table)
	corr := be.Embedding(tt, index, tensor.Shape{batch, L})
	out := be.Add(x, corr)
	be.Free(tt, corr, x)
	return out
}
