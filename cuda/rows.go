package cuda

import (
	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

var _ backend.RowRanger = (*Backend)(nil)

// A batch row is contiguous in both layouts (row-major and channels-last
// keep the batch dimension outermost), so a range of rows is a byte range
// of the buffer: Rows copies it and AddRows adds into it in place, with no
// gather or transpose (per-request LoRA in a mixed batch, core/lora).

// aligned16 reports whether a pointer off bytes into a buffer suits the
// vectorised (16-byte) elementwise kernels.
func aligned16(off int64) bool { return off%16 == 0 }

// Rows implements backend.RowRanger: rows [from, to) of x's first
// dimension, in x's layout and dtype.
func (b *Backend) Rows(x *tensor.Tensor, from, to int) *tensor.Tensor {
	const op = "Rows"
	xs := b.st(op, x)
	sh := x.Shape()
	if len(sh) == 0 || from < 0 || to > sh[0] || from >= to {
		fail(op, "rows [%d, %d) of %s", from, to, sh)
	}
	dt := x.DType()
	per := x.Numel() / sh[0]
	osh := sh.Clone()
	osh[0] = to - from
	out := b.newOut(op, osh, dt)
	n := osh.Numel()
	if n == 0 {
		return b.wrap(osh, dt, xs.layout, out)
	}
	off := int64(from) * int64(per) * int64(dt.Size())
	if aligned16(off) {
		b.d.launch("unary"+suffix(dt), b.d.grid1(n/vecN(dt)+1), out, pbuf(out), pbufAt(xs.buf, off), u32(n), i32(opScale), f32(1))
	} else {
		// the rows as a table lookup, element by element
		ids := make([]int32, to-from)
		for i := range ids {
			ids[i] = int32(from + i)
		}
		idb := b.int32Buffer(ids)
		b.d.launch("embedding"+suffix(dt), b.d.grid1(n), out, pbuf(out), pbuf(xs.buf), pbuf(idb), i32(len(ids)), i32(per))
	}
	return b.wrap(osh, dt, xs.layout, out)
}

// AddRows implements backend.RowRanger: a copy of y with each part's
// Scale·T added to its rows, in y's layout and dtype.
func (b *Backend) AddRows(y *tensor.Tensor, parts []backend.RowPart) *tensor.Tensor {
	const op = "AddRows"
	ys := b.st(op, y)
	sh := y.Shape()
	if len(sh) == 0 {
		fail(op, "y %s has no rows", sh)
	}
	dt := y.DType()
	n := y.Numel()
	out := b.newOut(op, sh, dt)
	if n == 0 {
		return b.wrap(sh, dt, ys.layout, out)
	}
	per := n / sh[0]
	b.d.launch("unary"+suffix(dt), b.d.grid1(n/vecN(dt)+1), out, pbuf(out), pbuf(ys.buf), u32(n), i32(opScale), f32(1))
	for _, p := range parts {
		ps := b.st(op, p.T)
		psh := p.T.Shape()
		if len(psh) != len(sh) || !psh[1:].Equal(sh[1:]) || p.From < 0 || p.From+psh[0] > sh[0] {
			fail(op, "part %s at row %d does not fit %s", psh, p.From, sh)
		}
		np := p.T.Numel()
		if np == 0 {
			continue
		}
		pb := ps.buf
		if ps.layout != ys.layout {
			if ys.layout == nhwc {
				pb = b.channelsLast(p.T, ps)
			} else {
				pb = b.logical(p.T, ps)
			}
		}
		pb = b.asType(pb, p.T.DType(), dt, np)
		if p.Scale != 1 {
			sc := b.d.newBuffer(int64(np) * int64(dt.Size()))
			b.d.launch("unary"+suffix(dt), b.d.grid1(np/vecN(dt)+1), sc, pbuf(sc), pbuf(pb), u32(np), i32(opScale), f32(p.Scale))
			pb = sc
		}
		off := int64(p.From) * int64(per) * int64(dt.Size())
		if aligned16(off) {
			b.d.launch("add"+suffix(dt), b.d.grid1(np/vecN(dt)+1), out, pbufAt(out, off), pbufAt(out, off), pbuf(pb), u32(np))
		} else {
			// elementwise (v[i % np] is v[i]): no vector alignment needed
			b.d.launch("add_bcast"+suffix(dt)+suffix(dt), b.d.grid1(np), out, pbufAt(out, off), pbufAt(out, off), pbuf(pb), u32(np), u32(np), u32(0), u32(1), u32(np))
		}
	}
	return b.wrap(sh, dt, ys.layout, out)
}
