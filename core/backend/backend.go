// Package backend defines the interface through which all model code
// computes. The CPU backend (core/backend/cpu) is the reference; the CUDA
// backend (cuda/) implements the same interface and must match it.
//
// Conventions:
//   - Image tensors are logically NCHW (batch, channels, height, width); a
//     backend may store them in another layout internally, which is why model
//     code converts between images and token sequences only through
//     ImageToTokens and TokensToImage, never through a generic permute.
//   - Token tensors are (batch, length, features).
//   - Ops never modify their inputs and return new tensors, which a backend
//     may draw from a pool; Free hands a tensor back early.
//   - On the CPU ops run at once; on a GPU they may only be enqueued.
//     ToFloat32 is the synchronisation point.
//   - Ops report failure (a shape error, out of memory) by panicking with
//     *Error; model entry points convert that into an ordinary error with
//     Recover, so a failed op fails one job and never the process.
package backend

import (
	"errors"
	"fmt"

	"github.com/kiln-project/kiln/core/tensor"
)

// Conv2DParams describe a 2-D convolution's stride and zero padding.
type Conv2DParams struct {
	Stride int
	// Padding on each side: top, bottom, left, right.
	PadTop, PadBottom, PadLeft, PadRight int
}

// SymmetricPad returns params with the same padding p on every side.
func SymmetricPad(stride, p int) Conv2DParams {
	return Conv2DParams{Stride: stride, PadTop: p, PadBottom: p, PadLeft: p, PadRight: p}
}

// AttentionParams configure scaled dot-product attention.
type AttentionParams struct {
	Heads  int     // number of heads; the feature size must divide by it
	Scale  float32 // multiplier of q·k, usually 1/sqrt(head size)
	Causal bool    // mask key positions after the query position
	Upcast bool    // compute scores and softmax in float32 (matters only on reduced precision)
}

// Backend computes tensor ops. Implementations are not required to be safe
// for concurrent use; callers serialise access per backend instance.
type Backend interface {
	// Name identifies the backend and device, e.g. "cpu" or "cuda:0".
	Name() string

	// Upload makes a weight tensor from little-endian raw data of dtype dt.
	// The CPU backend uses F32 data in place without copying, so raw must
	// stay valid and unmodified for the tensor's lifetime (a memory map).
	Upload(shape tensor.Shape, dt tensor.DType, raw []byte) *tensor.Tensor
	// FromFloat32 copies host data into a new activation tensor.
	FromFloat32(shape tensor.Shape, data []float32) *tensor.Tensor
	// ToFloat32 waits for pending work on t and returns a host copy.
	ToFloat32(t *tensor.Tensor) []float32
	// Free returns tensors to the backend's pool; they must not be used again.
	// Freeing is optional: unfreed activations are reclaimed by the garbage
	// collector on the CPU and at job end on a GPU.
	Free(ts ...*tensor.Tensor)

	// Linear computes x·wᵀ + b over the last dimension: x (..., K),
	// w (N, K), b (N) or nil → (..., N).
	Linear(x, w, b *tensor.Tensor) *tensor.Tensor
	// Conv2D convolves x (B, Cin, H, W) with w (Cout, Cin, kh, kw) and adds
	// b (Cout) or nil.
	Conv2D(x, w, b *tensor.Tensor, p Conv2DParams) *tensor.Tensor
	// LayerNorm normalises over the last dimension with weight and bias.
	LayerNorm(x, w, b *tensor.Tensor, eps float32) *tensor.Tensor
	// GroupNorm normalises x (B, C, H, W) over groups of channels, applies
	// the per-channel affine w, b and then SiLU when silu is set.
	GroupNorm(x, w, b *tensor.Tensor, groups int, eps float32, silu bool) *tensor.Tensor
	// Attention computes softmax(scale·q·kᵀ)·v per head: q (B, Lq, H·D),
	// k and v (B, Lk, H·D) → (B, Lq, H·D).
	Attention(q, k, v *tensor.Tensor, p AttentionParams) *tensor.Tensor
	// Embedding looks up rows of table (V, D) for ids laid out as shape
	// (B, L) → (B, L, D).
	Embedding(table *tensor.Tensor, ids []int32, shape tensor.Shape) *tensor.Tensor
	// GatherRows picks row rows[b] of each batch element: x (B, L, D) → (B, D).
	GatherRows(x *tensor.Tensor, rows []int) *tensor.Tensor

	// Add returns a + b for tensors of equal shape.
	Add(a, b *tensor.Tensor) *tensor.Tensor
	// AddBroadcast returns x + v where v's shape is a prefix of x's
	// (e.g. x (B, C, H, W) + v (B, C), or x (B, L, D) + v (L, D) when
	// v matches x's trailing dimensions): v is repeated over the dimensions
	// it lacks. Exactly one of the two placements must fit.
	AddBroadcast(x, v *tensor.Tensor) *tensor.Tensor
	// Scale returns s·x.
	Scale(x *tensor.Tensor, s float32) *tensor.Tensor
	// SiLU returns x·sigmoid(x).
	SiLU(x *tensor.Tensor) *tensor.Tensor
	// GELU returns the exact (erf) GELU of x.
	GELU(x *tensor.Tensor) *tensor.Tensor
	// QuickGELU returns x·sigmoid(1.702·x).
	QuickGELU(x *tensor.Tensor) *tensor.Tensor
	// GEGLU splits the last dimension in halves a, g and returns a·GELU(g).
	GEGLU(x *tensor.Tensor) *tensor.Tensor

	// ConcatChannels joins (B, C1, H, W) and (B, C2, H, W) into (B, C1+C2, H, W).
	ConcatChannels(a, b *tensor.Tensor) *tensor.Tensor
	// UpsampleNearest2x doubles height and width of (B, C, H, W) by repetition.
	UpsampleNearest2x(x *tensor.Tensor) *tensor.Tensor
	// ImageToTokens turns (B, C, H, W) into (B, H·W, C).
	ImageToTokens(x *tensor.Tensor) *tensor.Tensor
	// TokensToImage turns (B, H·W, C) into (B, C, H, W).
	TokensToImage(x *tensor.Tensor, h, w int) *tensor.Tensor
	// Reshape returns x with a new shape of the same element count,
	// sharing or copying data as the backend chooses.
	Reshape(x *tensor.Tensor, shape tensor.Shape) *tensor.Tensor
}

// Error is the panic value with which a backend op reports failure.
type Error struct {
	Op  string
	Err error
}

// Error names the op and its cause.
func (e *Error) Error() string { return fmt.Sprintf("backend %s: %v", e.Op, e.Err) }

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// ErrOutOfMemory marks a failure to allocate backend memory.
var ErrOutOfMemory = errors.New("out of memory")

// Fail panics with an *Error for op; backends call it when an op cannot run.
func Fail(op string, format string, args ...any) {
	panic(&Error{Op: op, Err: fmt.Errorf(format, args...)})
}

// FailErr panics with an *Error wrapping err.
func FailErr(op string, err error) {
	panic(&Error{Op: op, Err: err})
}

// Recover turns a backend *Error panic into *errp. Use it deferred at every
// model entry point:
//
//	func (m *Model) Forward(...) (out []float32, err error) {
//		defer backend.Recover(&err)
//		...
//	}
//
// Panics that are not *Error are re-raised.
func Recover(errp *error) {
	r := recover()
	if r == nil {
		return
	}
	if e, ok := r.(*Error); ok {
		*errp = e
		return
	}
	panic(r)
}
