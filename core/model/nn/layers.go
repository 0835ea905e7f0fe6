package nn

import (
	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// Conv2D is a 2-D convolution with bias, weights "<name>.weight" (Cout,
// Cin, k, k) and "<name>.bias" (Cout).
type Conv2D struct {
	W, B   *Weight
	Params backend.Conv2DParams
}

// NewConv2D declares a k×k convolution from cin to cout channels.
func NewConv2D(ws *Weights, name string, cin, cout, k int, p backend.Conv2DParams) *Conv2D {
	s := ws.Sub(name)
	return &Conv2D{W: s.Get("weight", cout, cin, k, k), B: s.Get("bias", cout), Params: p}
}

// Forward convolves x (B, Cin, H, W).
func (c *Conv2D) Forward(be backend.Backend, x *tensor.Tensor) *tensor.Tensor {
	return adapt(be, c.W, x, be.Conv2D(x, c.W.T, c.B.T, c.Params), &c.Params)
}

// Linear is x·Wᵀ + b over the last dimension; B is nil without bias.
type Linear struct {
	W, B *Weight
}

// NewLinear declares a linear layer from in to out features.
func NewLinear(ws *Weights, name string, in, out int, bias bool) *Linear {
	s := ws.Sub(name)
	l := &Linear{W: s.Get("weight", out, in)}
	if bias {
		l.B = s.Get("bias", out)
	}
	return l
}

// Forward applies the layer to x (..., in).
func (l *Linear) Forward(be backend.Backend, x *tensor.Tensor) *tensor.Tensor {
	var b *tensor.Tensor
	if l.B != nil {
		b = l.B.T
	}
	return adapt(be, l.W, x, be.Linear(x, l.W.T, b), nil)
}

// GroupNorm is group normalisation with a per-channel affine transform.
type GroupNorm struct {
	W, B   *Weight
	Groups int
	Eps    float32
}

// NewGroupNorm declares a group norm over c channels.
func NewGroupNorm(ws *Weights, name string, groups, c int, eps float64) *GroupNorm {
	s := ws.Sub(name)
	return &GroupNorm{W: s.Get("weight", c), B: s.Get("bias", c), Groups: groups, Eps: float32(eps)}
}

// Forward normalises x (B, C, H, W), followed by SiLU when silu is set.
func (g *GroupNorm) Forward(be backend.Backend, x *tensor.Tensor, silu bool) *tensor.Tensor {
	return be.GroupNorm(x, g.W.T, g.B.T, g.Groups, g.Eps, silu)
}

// LayerNorm normalises over the last dimension with an affine transform.
type LayerNorm struct {
	W, B *Weight
	Eps  float32
}

// NewLayerNorm declares a layer norm over d features.
func NewLayerNorm(ws *Weights, name string, d int, eps float64) *LayerNorm {
	s := ws.Sub(name)
	return &LayerNorm{W: s.Get("weight", d), B: s.Get("bias", d), Eps: float32(eps)}
}

// Forward normalises x (..., d).
func (l *LayerNorm) Forward(be backend.Backend, x *tensor.Tensor) *tensor.Tensor {
	return be.LayerNorm(x, l.W.T, l.B.T, l.Eps)
}

// Resnet is diffusers' ResnetBlock2D with the default time-embedding mode:
// GroupNorm+SiLU, 3×3 conv, plus a per-channel projection of the activated
// time embedding, GroupNorm+SiLU, 3×3 conv, added to the input (through a
// 1×1 conv when the channel count changes).
type Resnet struct {
	Norm1    *GroupNorm
	Conv1    *Conv2D
	TimeProj *Linear // nil in models without a time embedding (the VAE)
	Norm2    *GroupNorm
	Conv2    *Conv2D
	Shortcut *Conv2D // nil when in == out
	In, Out  int
}

// NewResnet declares a ResNet block from in to out channels; temb is the
// time-embedding width, or 0 for none.
func NewResnet(ws *Weights, in, out, temb, groups int, eps float64) *Resnet {
	r := &Resnet{In: in, Out: out}
	r.Norm1 = NewGroupNorm(ws, "norm1", groups, in, eps)
	r.Conv1 = NewConv2D(ws, "conv1", in, out, 3, backend.SymmetricPad(1, 1))
	if temb > 0 {
		r.TimeProj = NewLinear(ws, "time_emb_proj", temb, out, true)
	}
	r.Norm2 = NewGroupNorm(ws, "norm2", groups, out, eps)
	r.Conv2 = NewConv2D(ws, "conv2", out, out, 3, backend.SymmetricPad(1, 1))
	if in != out {
		r.Shortcut = NewConv2D(ws, "conv_shortcut", in, out, 1, backend.SymmetricPad(1, 0))
	}
	return r
}

// Forward runs the block on x (B, In, H, W). tembAct is SiLU of the time
// embedding (B, temb), or nil when the block has no time projection.
func (r *Resnet) Forward(be backend.Backend, x, tembAct *tensor.Tensor) *tensor.Tensor {
	h := r.Norm1.Forward(be, x, true)
	h = swap(be, h, r.Conv1.Forward(be, h))
	if r.TimeProj != nil {
		t := r.TimeProj.Forward(be, tembAct)
		h = swap(be, h, addPerChannel(be, h, t))
		be.Free(t)
	}
	h = swap(be, h, r.Norm2.Forward(be, h, true))
	h = swap(be, h, r.Conv2.Forward(be, h))
	if r.Shortcut == nil {
		return swap(be, h, be.Add(x, h))
	}
	s := r.Shortcut.Forward(be, x)
	out := be.Add(s, h)
	be.Free(s, h)
	return out
}

// swap frees old and returns next: one step of a chain of ops whose
// intermediate results nobody else holds.
func swap(be backend.Backend, old, next *tensor.Tensor) *tensor.Tensor {
	be.Free(old)
	return next
}

// Swap frees old and returns next, for model code that replaces an
// intermediate activation by the result of an op on it.
func Swap(be backend.Backend, old, next *tensor.Tensor) *tensor.Tensor { return swap(be, old, next) }

// addPerChannel adds v (B, C) to every pixel of x (B, C, H, W). x is seen
// as (B, C, H·W, 1) so that v can only fit as its prefix: on (B, C, H, W)
// itself a v with (B, C) = (H, W) would also fit as a suffix.
func addPerChannel(be backend.Backend, x, v *tensor.Tensor) *tensor.Tensor {
	s := x.Shape()
	flat := be.Reshape(x, tensor.Shape{s[0], s[1], s[2] * s[3], 1})
	sum := be.AddBroadcast(flat, v)
	be.Free(flat)
	return swap(be, sum, be.Reshape(sum, s))
}
