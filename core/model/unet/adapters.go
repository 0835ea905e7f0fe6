package unet

import "github.com/kiln-project/kiln/core/model/nn"

// Modules lists the UNet's linear and convolution layers under their
// diffusers module paths (e.g. "down_blocks.0.attentions.0.proj_in").
func (m *Model) Modules() []nn.Module { return m.weights.Modules() }

// SetAdapter installs a (nil: removes the) per-row adapter on the module
// name; it reports whether the module exists. Like Forward it must not run
// concurrently with other calls on the model.
func (m *Model) SetAdapter(name string, a nn.Adapter) bool { return m.weights.SetAdapter(name, a) }
