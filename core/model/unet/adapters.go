package unet

import (
	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/model/nn"
	"github.com/kiln-project/kiln/core/tensor"
)

// Modules lists the UNet's linear and convolution layers under their
// diffusers module paths (e.g. "down_blocks.0.attentions.0.proj_in").
func (m *Model) Modules() []nn.Module { return m.weights.Modules() }

// SetAdapter installs a (nil: removes the) per-row adapter on the module
// name; it reports whether the module exists. Like Forward it must not run
// concurrently with other calls on the model.
func (m *Model) SetAdapter(name string, a nn.Adapter) bool { return m.weights.SetAdapter(name, a) }

// Weight returns the tensor of module name's weight (nil if none).
func (m *Model) Weight(name string) *tensor.Tensor { return m.weights.Tensor(name + ".weight") }

// Backend returns the backend the model's weights live on (for merging
// LoRAs with its ops).
func (m *Model) Backend() backend.Backend { return m.be }

// SetWeight replaces module name's weight tensor (merging a LoRA).
func (m *Model) SetWeight(name string, t *tensor.Tensor) bool {
	return m.weights.SetTensor(name+".weight", t)
}
