package backend

import "github.com/kiln-project/kiln/core/tensor"

// RowPart is a tensor to add, scaled, to rows From… of another (see
// RowRanger.AddRows).
type RowPart struct {
	T     *tensor.Tensor
	From  int
	Scale float32
}

// RowRanger is implemented by backends that copy and update ranges of a
// tensor's first dimension directly (the batch rows of a per-request
// LoRA). Callers fall back to other ops on backends without it.
type RowRanger interface {
	// Rows returns rows [from, to) of x's first dimension as a new tensor.
	Rows(x *tensor.Tensor, from, to int) *tensor.Tensor
	// AddRows returns y with each part's Scale·T added to y's rows From to
	// From+T's rows; every part has y's shape after the first dimension.
	AddRows(y *tensor.Tensor, parts []RowPart) *tensor.Tensor
}
