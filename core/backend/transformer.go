package backend

import "github.com/kiln-project/kiln/core/tensor"

// TransformerOps are the ops that diffusion transformers (Qwen-Image's
// MMDiT; later Wan, Flux, SD3) and decoder-only text encoders (Qwen2.5)
// need beyond Backend. A backend implements them all or none; model code
// asks with AsTransformer and fails clearly on a backend without them.
type TransformerOps interface {
	// RMSNorm returns x / sqrt(mean(x²) + eps) · w over the last
	// dimension; w (D) may be nil.
	RMSNorm(x, w *tensor.Tensor, eps float32) *tensor.Tensor
	// Mul returns a·b elementwise for tensors of equal shape.
	Mul(a, b *tensor.Tensor) *tensor.Tensor
	// GELUTanh returns the tanh approximation of GELU.
	GELUTanh(x *tensor.Tensor) *tensor.Tensor
	// Rotary rotates each head of x (B, L, H·D) by position: cos and sin
	// are (L, D/2) angles' cosines and sines. Interleaved rotates the
	// pairs (2i, 2i+1) (complex-number RoPE); otherwise the pairs
	// (i, i+D/2) (GPT-NeoX's rotate_half).
	Rotary(x, cos, sin *tensor.Tensor, heads int, interleaved bool) *tensor.Tensor
	// Modulate returns x·(1 + scale) + shift for x (B, L, D) and scale,
	// shift (B, D) (AdaLN modulation).
	Modulate(x, shift, scale *tensor.Tensor) *tensor.Tensor
	// AddGated returns x + gate·y for x, y (B, L, D) and gate (B, D).
	AddGated(x, y, gate *tensor.Tensor) *tensor.Tensor
	// Narrow returns indices [from, to) of dimension dim of x.
	Narrow(x *tensor.Tensor, dim, from, to int) *tensor.Tensor
	// Concat joins a and b along dimension dim; the other dimensions
	// must agree.
	Concat(a, b *tensor.Tensor, dim int) *tensor.Tensor
}

// AsTransformer returns be's TransformerOps, or an error naming the
// backend when it has none.
func AsTransformer(be Backend) (TransformerOps, error) {
	if t, ok := be.(TransformerOps); ok {
		return t, nil
	}
	return nil, &Error{Op: "TransformerOps", Err: errUnsupported(be.Name())}
}

type unsupportedError string

func (e unsupportedError) Error() string {
	return "backend " + string(e) + " does not implement the transformer ops (RMSNorm, Rotary, Modulate, …) yet"
}

func errUnsupported(name string) error { return unsupportedError(name) }
