package lora

import (
	"fmt"
	"math"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// Merger is a Target whose weights can be replaced, for merging LoRAs into
// them (unet.Model).
type Merger interface {
	Target
	Weight(name string) *tensor.Tensor
	SetWeight(name string, t *tensor.Tensor) bool
}

// Merge adds the uses' updates of namespace ns into the weights of t's
// linear modules (W + Σ weight·Scale·Up·Down, computed with backend ops) —
// for a batch whose rows all share one LoRA set, so that no step pays for
// the low-rank products — and returns the function that puts the original
// weights back. Convolution factors (LoCon) are not merged: they are
// returned as uses (same weights) to Install. text selects the text
// weights.
//
// Weight-decomposed factors (DoRA: Factor.Magnitude) are merged as PEFT's
// DoRA layer computes them: with W the module's original weight (before
// any of these uses) and s = weight·Scale, the use adds
// (m/‖W + s·ΔW‖ − 1)·W + (m/‖W + s·ΔW‖)·s·ΔW, the norm taken over each
// output row; a DoRA use alone thus gives W' = m·(W + s·ΔW)/‖W + s·ΔW‖, and
// stacked uses each decompose against W, as PEFT's forward does with
// several active adapters. These are computed on the host (float64 sums,
// float32 result).
//
// The pipeline merges only for DoRA (see core/pipeline's mergeUNet): the
// unmerged products are cheap on the GPU, and merging has not been measured there (TODO(lora):
// measure and let the engine choose for long homogeneous batches).
func Merge(be backend.Backend, t Merger, ns string, uses []Use, text bool) (restore func(), rest []Use, err error) {
	type swap struct {
		name     string
		old, new *tensor.Tensor
	}
	var swaps []swap
	orig := map[string]*tensor.Tensor{} // each module's weight before any use
	restore = func() {
		for i := len(swaps) - 1; i >= 0; i-- {
			t.SetWeight(swaps[i].name, swaps[i].old)
			be.Free(swaps[i].new)
		}
	}
	defer func() {
		if err != nil {
			restore()
		}
	}()
	defer backend.Recover(&err)
	for _, u := range uses {
		w := u.UNet
		if text {
			w = u.Text
		}
		if w == 0 || u.LoRA == nil {
			continue
		}
		convs := &LoRA{Hash: u.LoRA.Hash, Factors: map[string][]*Factor{}}
		for _, f := range u.LoRA.Factors[ns] {
			if f.Conv() {
				convs.Factors[ns] = append(convs.Factors[ns], f)
				continue
			}
			old := t.Weight(f.Module)
			if old == nil {
				return nil, nil, fmt.Errorf("lora: merge: the model has no module %s", f.Module)
			}
			if orig[f.Module] == nil {
				orig[f.Module] = old
			}
			var scaled *tensor.Tensor
			if f.Magnitude != nil {
				d := doraDelta(be.ToFloat32(orig[f.Module]), f, f.Scale*w)
				scaled = be.FromFloat32(tensor.Shape{f.Out, f.In()}, d)
			} else {
				// ΔW (out, in) = Up (out, r) · Down (r, in) = Linear(Up, Downᵀ)
				downT := make([]float32, len(f.Down))
				in := f.In()
				for k := 0; k < f.Rank; k++ {
					for i := 0; i < in; i++ {
						downT[i*f.Rank+k] = f.Down[k*in+i]
					}
				}
				up := be.Upload(tensor.Shape{f.Out, f.Rank}, tensor.F32, f32Bytes(f.Up))
				dt := be.Upload(tensor.Shape{in, f.Rank}, tensor.F32, f32Bytes(downT))
				delta := be.Linear(up, dt, nil)
				be.Free(up, dt)
				scaled = be.Scale(delta, f.Scale*w)
				be.Free(delta)
			}
			merged := be.Add(old, scaled)
			be.Free(scaled)
			if !t.SetWeight(f.Module, merged) {
				be.Free(merged)
				return nil, nil, fmt.Errorf("lora: merge: cannot replace the weight of %s", f.Module)
			}
			swaps = append(swaps, swap{f.Module, old, merged})
		}
		if len(convs.Factors[ns]) > 0 {
			v := u
			v.LoRA = convs
			rest = append(rest, v)
		}
	}
	return restore, rest, nil
}

// doraDelta is what a DoRA factor at effective scale s adds to the
// original weight w (out, in): c·(w + s·ΔW) − w with c = m/‖w + s·ΔW‖ per
// output row (a zero row norm leaves its row as it is).
func doraDelta(w []float32, f *Factor, s float32) []float32 {
	in := f.In()
	out := make([]float32, f.Out*in)
	row := make([]float64, in)
	for o := 0; o < f.Out; o++ {
		var sum float64
		for i := 0; i < in; i++ {
			var d float64
			for k := 0; k < f.Rank; k++ {
				d += float64(f.Up[o*f.Rank+k]) * float64(f.Down[k*in+i])
			}
			v := float64(w[o*in+i]) + float64(s)*d
			row[i] = v
			sum += v * v
		}
		c := 1.0
		if n := math.Sqrt(sum); n > 0 {
			c = float64(f.Magnitude[o]) / n
		}
		for i := 0; i < in; i++ {
			out[o*in+i] = float32(c*row[i] - float64(w[o*in+i]))
		}
	}
	return out
}
