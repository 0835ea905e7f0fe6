package nn

import (
	"strings"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// Adapter adds an update to a layer's output that depends on the layer's
// input, row by row of the batch (a per-request LoRA): Adapt receives the
// input x and the base output y and returns the adapted output, which may
// be y itself (no row adapted). conv is the base convolution's parameters,
// nil for a linear layer. Adapt may free y when it returns a new tensor.
type Adapter interface {
	Adapt(be backend.Backend, x, y *tensor.Tensor, conv *backend.Conv2DParams) *tensor.Tensor
}

// Module describes one adaptable layer of a model by the module path its
// weight has in the diffusers/transformers checkpoint (the weight name
// without ".weight"), with the weight's shape: (Out, In) for a linear layer,
// (Out, In, KH, KW) for a convolution.
type Module struct {
	Name  string
	Shape tensor.Shape
	// Aliases are other names files may give the module (the original
	// SGM path of an SDXL UNet module, which kohya's SDXL LoRAs use).
	Aliases []string
}

// Conv reports whether the module is a convolution.
func (m Module) Conv() bool { return len(m.Shape) == 4 }

// Modules lists the linear and convolution layers declared in w (every
// weight named "<module>.weight" with two or four dimensions), in
// declaration order.
func (w *Weights) Modules() []Module {
	var out []Module
	for _, wt := range w.set.list {
		name, ok := strings.CutSuffix(wt.Name, ".weight")
		if !ok || (len(wt.Shape) != 2 && len(wt.Shape) != 4) {
			continue
		}
		out = append(out, Module{Name: name, Shape: wt.Shape.Clone()})
	}
	return out
}

// SetAdapter installs a (nil: removes the) adapter on the module name (see
// Modules); it reports whether the module exists.
func (w *Weights) SetAdapter(name string, a Adapter) bool {
	wt, ok := w.set.byName[name+".weight"]
	if !ok || (len(wt.Shape) != 2 && len(wt.Shape) != 4) {
		return false
	}
	wt.Adapter = a
	return true
}

// adapt runs w's adapter, if any, on a layer's input and output.
func adapt(be backend.Backend, w *Weight, x, y *tensor.Tensor, conv *backend.Conv2DParams) *tensor.Tensor {
	if w.Adapter == nil {
		return y
	}
	return w.Adapter.Adapt(be, x, y, conv)
}

// Tensor returns the uploaded tensor of the weight name ("<module>.weight"
// etc.), or nil when there is no such weight.
func (w *Weights) Tensor(name string) *tensor.Tensor {
	if wt, ok := w.set.byName[name]; ok {
		return wt.T
	}
	return nil
}

// SetTensor replaces the uploaded tensor of the weight name (merging a
// LoRA into it); it reports whether the weight exists. The caller keeps
// the old tensor to put it back.
func (w *Weights) SetTensor(name string, t *tensor.Tensor) bool {
	wt, ok := w.set.byName[name]
	if ok {
		wt.T = t
	}
	return ok
}
