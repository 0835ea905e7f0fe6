// Package tensor defines the backend-neutral tensor handle: a shape, an
// element type and storage owned by the backend that made it.
package tensor

import (
	"fmt"
	"strings"
)

// DType is the element type of a tensor.
type DType uint8

// Element types a backend may hold.
const (
	F32 DType = iota + 1
	F16
	BF16
)

// Size returns the number of bytes one element occupies.
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	}
	return 0
}

// String names the dtype as safetensors does.
func (d DType) String() string {
	switch d {
	case F32:
		return "F32"
	case F16:
		return "F16"
	case BF16:
		return "BF16"
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// Shape is the extent of each dimension, outermost first.
type Shape []int

// Numel returns the number of elements the shape holds.
func (s Shape) Numel() int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// Equal reports whether two shapes are identical.
func (s Shape) Equal(o Shape) bool {
	if len(s) != len(o) {
		return false
	}
	for i := range s {
		if s[i] != o[i] {
			return false
		}
	}
	return true
}

// Clone returns a copy that does not alias s.
func (s Shape) Clone() Shape { return append(Shape(nil), s...) }

// String formats the shape as (a, b, c).
func (s Shape) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// Tensor is a handle to a contiguous, row-major array owned by a backend.
// Model code reads only its shape and dtype; the storage is the backend's.
type Tensor struct {
	shape   Shape
	dtype   DType
	storage any
}

// New wraps backend-owned storage in a tensor handle. Only backends call it.
func New(shape Shape, dtype DType, storage any) *Tensor {
	return &Tensor{shape: shape.Clone(), dtype: dtype, storage: storage}
}

// Shape returns the tensor's shape; callers must not modify it.
func (t *Tensor) Shape() Shape { return t.shape }

// DType returns the element type.
func (t *Tensor) DType() DType { return t.dtype }

// Dim returns the extent of dimension i; negative i counts from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.shape)
	}
	return t.shape[i]
}

// Numel returns the number of elements.
func (t *Tensor) Numel() int { return t.shape.Numel() }

// Storage returns the backend-owned storage. Only the owning backend uses it.
func (t *Tensor) Storage() any { return t.storage }

// String describes the tensor without its data.
func (t *Tensor) String() string { return fmt.Sprintf("Tensor%s %s", t.shape, t.dtype) }
