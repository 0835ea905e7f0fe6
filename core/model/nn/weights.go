// Package nn holds what the UNet and the VAE share: weights that a model
// declares by their checkpoint names and shapes and that are checked against
// a safetensors source before anything is uploaded, the layers built from
// them (convolution, linear, group and layer norm, the ResNet block), and a
// strict reader for diffusers config.json files.
package nn

import (
	"fmt"
	"slices"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
)

// Weight is one parameter a model declares: the name it has in the
// checkpoint, the shape the config implies, and, after Load, its tensor.
type Weight struct {
	// Name is the tensor's name in the source (e.g. "conv_in.weight").
	Name string
	// Shape is the shape the model's config requires.
	Shape tensor.Shape
	// Legacy lists older names accepted, in order, when Name is absent.
	Legacy []string
	// AllowTrailingOnes accepts a source shape equal to Shape followed by
	// ones (a (C, C, 1, 1) 1×1-convolution weight for a (C, C) linear one).
	AllowTrailingOnes bool
	// T is the uploaded tensor; nil until Load succeeds.
	T *tensor.Tensor
	// Adapter, when set, adapts the output of the layer using this weight
	// (a per-request LoRA); see Weights.SetAdapter.
	Adapter Adapter

	source string // the name found in the source
	dtype  tensor.DType
}

// Weights collects the weights of a model under a name prefix. Sub-modules
// take a Sub view that extends the prefix; all views share one list.
type Weights struct {
	prefix string
	set    *weightSet
}

type weightSet struct {
	list   []*Weight
	byName map[string]*Weight
}

// NewWeights returns an empty collection with no prefix.
func NewWeights() *Weights {
	return &Weights{set: &weightSet{byName: map[string]*Weight{}}}
}

// Sub returns a view whose names are prefixed with name and a dot.
func (w *Weights) Sub(name string) *Weights {
	return &Weights{prefix: w.prefix + name + ".", set: w.set}
}

// Subf is Sub with a formatted name, e.g. Subf("resnets.%d", i).
func (w *Weights) Subf(format string, args ...any) *Weights {
	return w.Sub(fmt.Sprintf(format, args...))
}

// Get declares the weight name (under the view's prefix) with the given
// shape and returns it. Declaring the same name twice panics: it is a bug
// in the model code, not bad input.
func (w *Weights) Get(name string, shape ...int) *Weight {
	full := w.prefix + name
	if _, dup := w.set.byName[full]; dup {
		panic("nn: weight " + full + " declared twice")
	}
	wt := &Weight{Name: full, Shape: tensor.Shape(shape).Clone()}
	w.set.list = append(w.set.list, wt)
	w.set.byName[full] = wt
	return wt
}

// List returns the declared weights in declaration order.
func (w *Weights) List() []*Weight { return slices.Clone(w.set.list) }

// Params returns the number of scalar parameters declared.
func (w *Weights) Params() int64 {
	var n int64
	for _, wt := range w.set.list {
		n += int64(wt.Shape.Numel())
	}
	return n
}

// Infos returns the name, dtype "F32" and shape of every declared weight, in
// declaration order, for writing a checkpoint of this architecture.
func (w *Weights) Infos() []safetensors.TensorInfo {
	out := make([]safetensors.TensorInfo, len(w.set.list))
	for i, wt := range w.set.list {
		out[i] = safetensors.TensorInfo{Name: wt.Name, DType: "F32", Shape: slices.Clone([]int(wt.Shape))}
	}
	return out
}

// Check compares the declared weights with src without reading any tensor
// data: every declared weight must be present with the required shape and
// a floating-point dtype, and src must hold no tensor that the model does
// not declare. The first problem found is returned, naming the tensor.
func (w *Weights) Check(src safetensors.Source) error {
	used := make(map[string]bool, len(w.set.list))
	for _, wt := range w.set.list {
		info, name, ok := lookup(src, wt)
		if !ok {
			return fmt.Errorf("missing tensor %q (the config needs shape %v)", wt.Name, []int(wt.Shape))
		}
		used[name] = true
		if !shapeFits(info.Shape, wt) {
			return fmt.Errorf("tensor %q has shape %v, the config needs %v", name, info.Shape, []int(wt.Shape))
		}
		dt, err := floatDType(info.DType)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		if want := int64(info.Numel() * dt.Size()); info.End-info.Begin != want {
			return fmt.Errorf("tensor %q holds %d bytes, its shape needs %d", name, info.End-info.Begin, want)
		}
		wt.source, wt.dtype = name, dt
	}
	for _, name := range src.Names() {
		if !used[name] {
			return fmt.Errorf("unexpected tensor %q: the config has no such parameter", name)
		}
	}
	return nil
}

// Load checks the weights against src (see Check) and, only when all of
// them fit, uploads each to be. F32 data is used in place on the CPU; F16
// and BF16 data is handed to the backend, which converts it once.
func (w *Weights) Load(be backend.Backend, src safetensors.Source) (err error) {
	if err := w.Check(src); err != nil {
		return err
	}
	defer backend.Recover(&err)
	for _, wt := range w.set.list {
		raw, err := src.Bytes(wt.source)
		if err != nil {
			return fmt.Errorf("read tensor %q: %w", wt.source, err)
		}
		if want := wt.Shape.Numel() * wt.dtype.Size(); len(raw) != want {
			return fmt.Errorf("tensor %q: source returned %d bytes, want %d", wt.source, len(raw), want)
		}
		wt.T = be.Upload(wt.Shape, wt.dtype, raw)
	}
	return nil
}

func lookup(src safetensors.Source, wt *Weight) (safetensors.TensorInfo, string, bool) {
	if info, ok := src.Info(wt.Name); ok {
		return info, wt.Name, true
	}
	for _, alt := range wt.Legacy {
		if info, ok := src.Info(alt); ok {
			return info, alt, true
		}
	}
	return safetensors.TensorInfo{}, "", false
}

func shapeFits(got []int, wt *Weight) bool {
	want := []int(wt.Shape)
	if slices.Equal(got, want) {
		return true
	}
	if !wt.AllowTrailingOnes || len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
		return false
	}
	for _, d := range got[len(want):] {
		if d != 1 {
			return false
		}
	}
	return true
}

func floatDType(s string) (tensor.DType, error) {
	switch s {
	case "F32":
		return tensor.F32, nil
	case "F16":
		return tensor.F16, nil
	case "BF16":
		return tensor.BF16, nil
	}
	return 0, fmt.Errorf("dtype %s is not a floating-point weight type (F32, F16 or BF16)", s)
}
