package cpu

import (
	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

var _ backend.RowRanger = (*Backend)(nil)

// Rows implements backend.RowRanger.
func (b *Backend) Rows(x *tensor.Tensor, from, to int) *tensor.Tensor {
	src := data("Rows", x)
	sh := x.Shape()
	if len(sh) == 0 || from < 0 || to > sh[0] || from >= to {
		backend.Fail("Rows", "rows [%d, %d) of %s", from, to, sh)
	}
	per := x.Numel() / sh[0]
	osh := sh.Clone()
	osh[0] = to - from
	t, dst := b.newTensor(osh)
	copy(dst, src[from*per:to*per])
	return t
}

// AddRows implements backend.RowRanger.
func (b *Backend) AddRows(y *tensor.Tensor, parts []backend.RowPart) *tensor.Tensor {
	src := data("AddRows", y)
	sh := y.Shape()
	if len(sh) == 0 {
		backend.Fail("AddRows", "y %s has no rows", sh)
	}
	per := y.Numel() / sh[0]
	t, dst := b.newTensor(sh)
	copy(dst, src)
	for _, p := range parts {
		d := data("AddRows", p.T)
		ps := p.T.Shape()
		if len(ps) != len(sh) || !ps[1:].Equal(sh[1:]) || p.From < 0 || p.From+ps[0] > sh[0] {
			backend.Fail("AddRows", "part %s at row %d does not fit %s", ps, p.From, sh)
		}
		out := dst[p.From*per : p.From*per+len(d)]
		for i, v := range d {
			out[i] += p.Scale * v
		}
	}
	return t
}
