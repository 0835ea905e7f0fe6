package cpu

import (
	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// Embedding looks up rows of table (V, D) for ids laid out as shape → (shape..., D).
func (be *Backend) Embedding(table *tensor.Tensor, ids []int32, shape tensor.Shape) *tensor.Tensor {
	const op = "Embedding"
	td := data(op, table)
	if len(table.Shape()) != 2 {
		backend.Fail(op, "table %s is not 2-D", table.Shape())
	}
	if shape.Numel() != len(ids) {
		backend.Fail(op, "ids shape %s holds %d ids, got %d", shape, shape.Numel(), len(ids))
	}
	v, d := table.Dim(0), table.Dim(1)
	for i, id := range ids {
		if id < 0 || int(id) >= v {
			backend.Fail(op, "id %d at position %d outside table %s", id, i, table.Shape())
		}
	}
	out, od := be.newTensor(append(shape.Clone(), d))
	for i, id := range ids {
		copy(od[i*d:i*d+d], td[int(id)*d:int(id)*d+d])
	}
	return out
}

// GatherRows picks row rows[b] of each batch element: x (B, L, D) → (B, D).
func (be *Backend) GatherRows(x *tensor.Tensor, rows []int) *tensor.Tensor {
	const op = "GatherRows"
	xd := data(op, x)
	if len(x.Shape()) != 3 {
		backend.Fail(op, "x %s is not (B, L, D)", x.Shape())
	}
	bn, l, d := x.Dim(0), x.Dim(1), x.Dim(2)
	if len(rows) != bn {
		backend.Fail(op, "%d rows for x %s with batch %d", len(rows), x.Shape(), bn)
	}
	for b, r := range rows {
		if r < 0 || r >= l {
			backend.Fail(op, "row %d for batch %d outside x %s", r, b, x.Shape())
		}
	}
	out, od := be.newTensor(tensor.Shape{bn, d})
	for b, r := range rows {
		copy(od[b*d:b*d+d], xd[(b*l+r)*d:(b*l+r)*d+d])
	}
	return out
}

// ConcatChannels joins (B, C1, H, W) and (B, C2, H, W) into (B, C1+C2, H, W).
func (be *Backend) ConcatChannels(a, b *tensor.Tensor) *tensor.Tensor {
	const op = "ConcatChannels"
	ad, bd := data(op, a), data(op, b)
	as, bs := a.Shape(), b.Shape()
	if len(as) != 4 || len(bs) != 4 || as[0] != bs[0] || as[2] != bs[2] || as[3] != bs[3] {
		backend.Fail(op, "a %s and b %s must be (B, C, H, W) with equal B, H, W", as, bs)
	}
	hw := as[2] * as[3]
	na, nb := as[1]*hw, bs[1]*hw
	out, od := be.newTensor(tensor.Shape{as[0], as[1] + bs[1], as[2], as[3]})
	be.parallelFor(as[0], 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dst := od[i*(na+nb):]
			copy(dst[:na], ad[i*na:(i+1)*na])
			copy(dst[na:na+nb], bd[i*nb:(i+1)*nb])
		}
	})
	return out
}

// UpsampleNearest2x doubles height and width of (B, C, H, W) by repetition.
func (be *Backend) UpsampleNearest2x(x *tensor.Tensor) *tensor.Tensor {
	const op = "UpsampleNearest2x"
	xd := data(op, x)
	if len(x.Shape()) != 4 {
		backend.Fail(op, "x %s is not (B, C, H, W)", x.Shape())
	}
	bn, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	out, od := be.newTensor(tensor.Shape{bn, c, 2 * h, 2 * w})
	be.parallelFor(bn*c*h, max(1, elementGrain/max(1, 4*w)), func(lo, hi int) {
		for r := lo; r < hi; r++ { // r indexes (b, c, y) input rows
			src := xd[r*w : r*w+w]
			d0 := od[2*r*2*w : 2*r*2*w+2*w]
			for x, v := range src {
				d0[2*x] = v
				d0[2*x+1] = v
			}
			copy(od[(2*r+1)*2*w:(2*r+2)*2*w], d0)
		}
	})
	return out
}

// ImageToTokens turns (B, C, H, W) into (B, H·W, C).
func (be *Backend) ImageToTokens(x *tensor.Tensor) *tensor.Tensor {
	const op = "ImageToTokens"
	xd := data(op, x)
	if len(x.Shape()) != 4 {
		backend.Fail(op, "x %s is not (B, C, H, W)", x.Shape())
	}
	bn, c, hw := x.Dim(0), x.Dim(1), x.Dim(2)*x.Dim(3)
	out, od := be.newTensor(tensor.Shape{bn, hw, c})
	for b := 0; b < bn; b++ {
		be.transpose(od[b*c*hw:(b+1)*c*hw], xd[b*c*hw:(b+1)*c*hw], c, hw)
	}
	return out
}

// TokensToImage turns (B, H·W, C) into (B, C, H, W).
func (be *Backend) TokensToImage(x *tensor.Tensor, h, w int) *tensor.Tensor {
	const op = "TokensToImage"
	xd := data(op, x)
	if len(x.Shape()) != 3 || h < 0 || w < 0 || x.Dim(1) != h*w {
		backend.Fail(op, "x %s is not (B, %d·%d, C)", x.Shape(), h, w)
	}
	bn, hw, c := x.Dim(0), x.Dim(1), x.Dim(2)
	out, od := be.newTensor(tensor.Shape{bn, c, h, w})
	for b := 0; b < bn; b++ {
		be.transpose(od[b*c*hw:(b+1)*c*hw], xd[b*c*hw:(b+1)*c*hw], hw, c)
	}
	return out
}

// transpose writes the transpose of src (rows × cols) into dst (cols × rows),
// in cache-sized tiles across threads.
func (be *Backend) transpose(dst, src []float32, rows, cols int) {
	const tile = 32
	tilesR := (rows + tile - 1) / tile
	be.parallelFor(tilesR, max(1, elementGrain/max(1, tile*cols)), func(lo, hi int) {
		for tr := lo; tr < hi; tr++ {
			r0, r1 := tr*tile, min(rows, tr*tile+tile)
			for c0 := 0; c0 < cols; c0 += tile {
				c1 := min(cols, c0+tile)
				for r := r0; r < r1; r++ {
					row := src[r*cols : r*cols+cols]
					for c := c0; c < c1; c++ {
						dst[c*rows+r] = row[c]
					}
				}
			}
		}
	})
}
