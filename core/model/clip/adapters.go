package clip

import (
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
