package nn

import (
	"math"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// This file holds the blocks transformer models share (Qwen2.5 text
// decoder, Qwen-Image's MMDiT; later Wan, Flux): RMS norm, rotary tables
// and the sinusoidal timestep embedding. They compute through
// backend.TransformerOps.

// RMSNorm is root-mean-square normalisation over the last dimension with
// an optional per-feature weight "<name>.weight".
type RMSNorm struct {
	W   *Weight // nil: no affine weight
	Eps float32
}

// NewRMSNorm declares an RMS norm over d features with a weight.
func NewRMSNorm(ws *Weights, name string, d int, eps float64) *RMSNorm {
	return &RMSNorm{W: ws.Sub(name).Get("weight", d), Eps: float32(eps)}
}

// Forward normalises x (..., d).
func (n *RMSNorm) Forward(ops backend.TransformerOps, x *tensor.Tensor) *tensor.Tensor {
	var w *tensor.Tensor
	if n.W != nil {
		w = n.W.T
	}
	return ops.RMSNorm(x, w, n.Eps)
}

// RopeFreqs returns the inverse frequencies 1/theta^(2i/dim), i < dim/2, in
// float32 as PyTorch computes them (theta^(float32(2i)/dim)).
func RopeFreqs(dim int, theta float64) []float32 {
	out := make([]float32, dim/2)
	for i := range out {
		e := float32(2*i) / float32(dim)
		out[i] = float32(1 / float32(math.Pow(theta, float64(e))))
	}
	return out
}

// RopeTable returns cos and sin tables (len(pos), len(freqs)·axes) for
// positions pos: row p holds, axis by axis, the angles pos[p][a]·freqs[a][i]
// computed in float32.
func RopeTable(pos [][]float32, freqs [][]float32) (cos, sin []float32) {
	w := 0
	for _, f := range freqs {
		w += len(f)
	}
	cos, sin = make([]float32, len(pos)*w), make([]float32, len(pos)*w)
	for p, ps := range pos {
		o := p * w
		for a, f := range freqs {
			for _, fr := range f {
				ang := float64(ps[a] * fr)
				cos[o], sin[o] = float32(math.Cos(ang)), float32(math.Sin(ang))
				o++
			}
		}
	}
	return cos, sin
}

// TimestepEmbedding returns diffusers' sinusoidal embedding of timesteps
// (get_timestep_embedding): dim/2 frequencies exp(-ln(maxPeriod)·i/(dim/2
// − shift)), angles scale·t·freq, [sin, cos] or [cos, sin] with
// flipSinToCos; one row of dim values per timestep.
func TimestepEmbedding(ts []float32, dim int, flipSinToCos bool, shift, scale float64) []float32 {
	half := dim / 2
	out := make([]float32, len(ts)*dim)
	for b, t := range ts {
		row := out[b*dim : (b+1)*dim]
		for i := 0; i < half; i++ {
			e := float32(-math.Log(10000)) * float32(i)
			e /= float32(float64(half) - shift)
			f := float32(math.Exp(float64(e)))
			ang := float64(float32(scale) * (t * f))
			s, c := float32(math.Sin(ang)), float32(math.Cos(ang))
			if flipSinToCos {
				row[i], row[half+i] = c, s
			} else {
				row[i], row[half+i] = s, c
			}
		}
	}
	return out
}
