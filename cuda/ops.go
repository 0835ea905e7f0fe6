package cuda

import (
	"encoding/binary"

	"github.com/kiln-project/kiln/core/tensor"
)

// Unary op codes of the unary kernel.
const (
	opScale     = 0
	opSiLU      = 1
	opGELU      = 2
	opQuickGELU = 3
)

// grid1 sizes a grid-stride launch over work units.
func (d *Device) grid1(work int) launchCfg {
	blocks := (work + 255) / 256
	lim := d.info.SMs * 16
	if lim < 64 {
		lim = 1024
	}
	blocks = max(1, min(blocks, lim))
	return launchCfg{grid: [3]uint32{uint32(blocks), 1, 1}, block: [3]uint32{256, 1, 1}}
}

// vecN is the number of elements of dt in 16 bytes.
func vecN(dt tensor.DType) int { return 16 / dt.Size() }

// maxGridYZ is CUDA's limit on a grid's y and z dimensions (x allows
// 2³¹−1 blocks).
const maxGridYZ = 65535

// maxTRows is the most rows one transpose launch takes: its grid has one
// block row per 32 of them.
const maxTRows = maxGridYZ * 32

// transpose records dst[k][c][r] = src[k][r][c] for src (batch, rows, cols).
// The kernel's grid is (cols/32, rows/32, batch); shapes past the grid's y
// and z limits (more than maxTRows rows, more than 65535 batches: a
// channels-last image above about 1448², a LoRA's rows moved as one
// column) are split into launches that fit (transposeAt).
func (b *Backend) transpose(dst, src *buffer, dt tensor.DType, batch, rows, cols int) {
	b.transposeAt(dst, 0, src, 0, dt, batch, rows, cols)
}

// transposeAt is transpose on the buffers' bytes from doff and soff.
func (b *Backend) transposeAt(dst *buffer, doff int64, src *buffer, soff int64, dt tensor.DType, batch, rows, cols int) {
	if batch == 0 || rows == 0 || cols == 0 {
		return // a zero grid dimension is an invalid launch
	}
	es := int64(dt.Size())
	mat := int64(rows) * int64(cols) * es
	if batch > maxGridYZ {
		for k := 0; k < batch; k += maxGridYZ {
			n := min(maxGridYZ, batch-k)
			b.transposeAt(dst, doff+int64(k)*mat, src, soff+int64(k)*mat, dt, n, rows, cols)
		}
		return
	}
	if rows <= maxTRows {
		cfg := launchCfg{grid: [3]uint32{uint32((cols + 31) / 32), uint32((rows + 31) / 32), uint32(batch)}, block: [3]uint32{32, 8, 1}}
		b.d.launch("transpose"+suffix(dt), cfg, dst, pbufAt(dst, doff), pbufAt(src, soff), i32(rows), i32(cols))
		return
	}
	// rows = p·q with q ≤ maxTRows and p ≤ 65535: S (p, q, C) → D (C, p, q)
	// in three transposes that each fit the grid: per p, (q, C) → (C, q)
	// into T1 (p, C, q); (p, C·q) → (C·q, p) into T2 (C, q, p); per C,
	// (q, p) → (p, q).
	q := 0
	for d := min(rows, maxTRows); d >= 1 && rows/d <= maxGridYZ; d-- {
		if rows%d == 0 {
			q = d
			break
		}
	}
	if q == 0 {
		fail("transpose", "%d rows do not split into %d×%d launches (%d batches of %d columns)", rows, maxGridYZ, maxTRows, batch, cols)
	}
	p := rows / q
	for k := 0; k < batch; k++ {
		t1 := b.d.newBuffer(mat)
		t2 := b.d.newBuffer(mat)
		b.transposeAt(t1, 0, src, soff+int64(k)*mat, dt, p, q, cols)
		b.transposeAt(t2, 0, t1, 0, dt, 1, p, cols*q)
		b.transposeAt(dst, doff+int64(k)*mat, t2, 0, dt, cols, q, p)
	}
}

// convert records dst = src converted between dtypes (n elements).
func (b *Backend) convert(dst, src *buffer, from, to tensor.DType, n int) {
	b.d.launch("convert"+suffix(from)+"_"+suffix(to)[1:], b.d.grid1(n), dst, pbuf(dst), pbuf(src), u32(n))
}

// asType returns buf (n elements of from) as dtype to, converting if needed.
func (b *Backend) asType(buf *buffer, from, to tensor.DType, n int) *buffer {
	if from == to {
		return buf
	}
	out := b.d.newBuffer(int64(n) * int64(to.Size()))
	b.convert(out, buf, from, to, n)
	return out
}

// logical returns t's data in logical (row-major) order.
func (b *Backend) logical(t *tensor.Tensor, s *storage) *buffer {
	if s.layout == rowMajor {
		return s.buf
	}
	sh := t.Shape()
	tmp := b.d.newBuffer(int64(t.Numel()) * int64(t.DType().Size()))
	b.transpose(tmp, s.buf, t.DType(), sh[0], sh[2]*sh[3], sh[1])
	return tmp
}

// channelsLast returns the 4-D tensor t's data in (B, H, W, C) order.
func (b *Backend) channelsLast(t *tensor.Tensor, s *storage) *buffer {
	if s.layout == nhwc {
		return s.buf
	}
	sh := t.Shape()
	tmp := b.d.newBuffer(int64(t.Numel()) * int64(t.DType().Size()))
	b.transpose(tmp, s.buf, t.DType(), sh[0], sh[1], sh[2]*sh[3])
	return tmp
}

// f32Param returns a 1-D parameter (bias, norm scale) of length n as
// float32, or nil for a nil tensor.
func (b *Backend) f32Param(op, what string, t *tensor.Tensor, n int, x *tensor.Tensor) *buffer {
	if t == nil {
		return nil
	}
	s := b.st(op, t)
	if !t.Shape().Equal(tensor.Shape{n}) {
		fail(op, "%s %s, want (%d) for x %s", what, t.Shape(), n, x.Shape())
	}
	return b.asType(s.buf, t.DType(), tensor.F32, n)
}

func pOpt(buf *buffer) arg {
	if buf == nil {
		return pnull()
	}
	return pbuf(buf)
}

// Add returns a + b for tensors of equal shape.
func (b *Backend) Add(x, y *tensor.Tensor) *tensor.Tensor {
	const op = "Add"
	xs, ys := b.st(op, x), b.st(op, y)
	if !x.Shape().Equal(y.Shape()) {
		fail(op, "shapes %s and %s differ", x.Shape(), y.Shape())
	}
	n := x.Numel()
	dt := x.DType()
	yb := ys.buf
	if ys.layout != xs.layout {
		if xs.layout == nhwc {
			yb = b.channelsLast(y, ys)
		} else {
			yb = b.logical(y, ys)
		}
	}
	yb = b.asType(yb, y.DType(), dt, n)
	out := b.newOut(op, x.Shape(), dt)
	b.d.launch("add"+suffix(dt), b.d.grid1(n/vecN(dt)+1), out, pbuf(out), pbuf(xs.buf), pbuf(yb), u32(n))
	return b.wrap(x.Shape(), dt, xs.layout, out)
}

// AddBroadcast returns x + v where v's shape is a prefix of x's (repeated
// over x's trailing dimensions) or a suffix of it (repeated over the
// leading ones); equal shapes add elementwise, and a v that fits both ways
// otherwise is ambiguous and fails.
func (b *Backend) AddBroadcast(x, v *tensor.Tensor) *tensor.Tensor {
	const op = "AddBroadcast"
	xs, vs := b.st(op, x), b.st(op, v)
	xsh, vsh := x.Shape(), v.Shape()
	if xsh.Equal(vsh) {
		return b.Add(x, v)
	}
	prefix := len(vsh) <= len(xsh) && xsh[:len(vsh)].Equal(vsh)
	suffixFit := len(vsh) <= len(xsh) && xsh[len(xsh)-len(vsh):].Equal(vsh)
	switch {
	case prefix && suffixFit:
		fail(op, "v %s fits x %s both as prefix and as suffix", vsh, xsh)
	case !prefix && !suffixFit:
		fail(op, "v %s is neither a prefix nor a suffix of x %s", vsh, xsh)
	}
	n, nv := x.Numel(), v.Numel()
	dt := x.DType()
	out := b.newOut(op, xsh, dt)
	if n == 0 || nv == 0 {
		return b.wrap(xsh, dt, xs.layout, out)
	}
	vb := b.logical(v, vs)
	vdt := v.DType()
	if vdt != dt && vdt != tensor.F32 {
		vb = b.asType(vb, vdt, dt, nv)
		vdt = dt
	}
	if dt == tensor.F32 {
		vdt = tensor.F32
	}
	xb := xs.buf
	lay := xs.layout
	var od, om, idv, imod int
	switch {
	case lay == nhwc && prefix && len(vsh) == 2: // (B, C) over (B, H, W, C)
		od, om, idv, imod = n/xsh[0], xsh[1], 1, xsh[1]
	case lay == nhwc && prefix && len(vsh) == 1: // (B)
		od, om, idv, imod = n/xsh[0], 1, 1, 1
	default:
		if lay == nhwc {
			xb = b.logical(x, xs)
			lay = rowMajor
		}
		if prefix {
			od, om, idv, imod = n/nv, 1, 1, 1
		} else {
			od, om, idv, imod = n, 0, 1, nv
		}
	}
	name := "add_bcast" + suffix(dt) + suffix(vdt)
	b.d.launch(name, b.d.grid1(n), out, pbuf(out), pbuf(xb), pbuf(vb), u32(n), u32(od), u32(om), u32(idv), u32(imod))
	return b.wrap(xsh, dt, lay, out)
}

func (b *Backend) unary(op string, x *tensor.Tensor, code int, s float32) *tensor.Tensor {
	xs := b.st(op, x)
	n := x.Numel()
	dt := x.DType()
	out := b.newOut(op, x.Shape(), dt)
	b.d.launch("unary"+suffix(dt), b.d.grid1(n/vecN(dt)+1), out, pbuf(out), pbuf(xs.buf), u32(n), i32(code), f32(s))
	return b.wrap(x.Shape(), dt, xs.layout, out)
}

// Scale returns s·x.
func (b *Backend) Scale(x *tensor.Tensor, s float32) *tensor.Tensor {
	return b.unary("Scale", x, opScale, s)
}

// SiLU returns x·sigmoid(x).
func (b *Backend) SiLU(x *tensor.Tensor) *tensor.Tensor { return b.unary("SiLU", x, opSiLU, 0) }

// GELU returns the exact (erf) GELU of x.
func (b *Backend) GELU(x *tensor.Tensor) *tensor.Tensor { return b.unary("GELU", x, opGELU, 0) }

// QuickGELU returns x·sigmoid(1.702·x).
func (b *Backend) QuickGELU(x *tensor.Tensor) *tensor.Tensor {
	return b.unary("QuickGELU", x, opQuickGELU, 0)
}

// GEGLU splits the last dimension in halves a, g and returns a·GELU(g).
func (b *Backend) GEGLU(x *tensor.Tensor) *tensor.Tensor {
	const op = "GEGLU"
	xs := b.st(op, x)
	sh := x.Shape()
	if len(sh) < 1 || sh[len(sh)-1]%2 != 0 {
		fail(op, "last dimension of x %s is not even", sh)
	}
	h := sh[len(sh)-1] / 2
	osh := sh.Clone()
	osh[len(osh)-1] = h
	dt := x.DType()
	out := b.newOut(op, osh, dt)
	if h == 0 {
		return b.wrap(osh, dt, rowMajor, out)
	}
	rows := x.Numel() / (2 * h)
	xb := b.logical(x, xs)
	b.d.launch("geglu"+suffix(dt), b.d.grid1(rows*h/vecN(dt)+1), out, pbuf(out), pbuf(xb), u32(rows), i32(h))
	return b.wrap(osh, dt, rowMajor, out)
}

// ConcatChannels joins (B, C1, H, W) and (B, C2, H, W) into (B, C1+C2, H, W).
func (b *Backend) ConcatChannels(x, y *tensor.Tensor) *tensor.Tensor {
	const op = "ConcatChannels"
	xs, ys := b.st(op, x), b.st(op, y)
	as, bs := x.Shape(), y.Shape()
	if len(as) != 4 || len(bs) != 4 || as[0] != bs[0] || as[2] != bs[2] || as[3] != bs[3] {
		fail(op, "a %s and b %s must be (B, C, H, W) with equal B, H, W", as, bs)
	}
	dt := x.DType()
	osh := tensor.Shape{as[0], as[1] + bs[1], as[2], as[3]}
	out := b.newOut(op, osh, dt)
	pixels := as[0] * as[2] * as[3]
	xb := b.channelsLast(x, xs)
	yb := b.asType(b.channelsLast(y, ys), y.DType(), dt, y.Numel())
	b.d.launch("concat_c"+suffix(dt), b.d.grid1(osh.Numel()/vecN(dt)+1), out, pbuf(out), pbuf(xb), pbuf(yb), u32(pixels), i32(as[1]), i32(bs[1]))
	return b.wrap(osh, dt, nhwc, out)
}

// UpsampleNearest2x doubles height and width of (B, C, H, W) by repetition.
func (b *Backend) UpsampleNearest2x(x *tensor.Tensor) *tensor.Tensor {
	const op = "UpsampleNearest2x"
	xs := b.st(op, x)
	sh := x.Shape()
	if len(sh) != 4 {
		fail(op, "x %s is not (B, C, H, W)", sh)
	}
	dt := x.DType()
	osh := tensor.Shape{sh[0], sh[1], 2 * sh[2], 2 * sh[3]}
	out := b.newOut(op, osh, dt)
	if osh.Numel() == 0 {
		return b.wrap(osh, dt, nhwc, out)
	}
	xb := b.channelsLast(x, xs)
	b.d.launch("upsample2x"+suffix(dt), b.d.grid1(osh.Numel()/vecN(dt)+1), out, pbuf(out), pbuf(xb), i32(sh[0]), i32(sh[2]), i32(sh[3]), i32(sh[1]))
	return b.wrap(osh, dt, nhwc, out)
}

// ImageToTokens turns (B, C, H, W) into (B, H·W, C); a channels-last image
// already is that, so the result shares its memory.
func (b *Backend) ImageToTokens(x *tensor.Tensor) *tensor.Tensor {
	const op = "ImageToTokens"
	xs := b.st(op, x)
	sh := x.Shape()
	if len(sh) != 4 {
		fail(op, "x %s is not (B, C, H, W)", sh)
	}
	osh := tensor.Shape{sh[0], sh[2] * sh[3], sh[1]}
	return b.wrap(osh, x.DType(), rowMajor, b.channelsLast(x, xs))
}

// TokensToImage turns (B, H·W, C) into (B, C, H, W), sharing memory (the
// image is channels-last).
func (b *Backend) TokensToImage(x *tensor.Tensor, h, w int) *tensor.Tensor {
	const op = "TokensToImage"
	xs := b.st(op, x)
	sh := x.Shape()
	if len(sh) != 3 || h < 0 || w < 0 || sh[1] != h*w {
		fail(op, "x %s is not (B, %d·%d, C)", sh, h, w)
	}
	osh := tensor.Shape{sh[0], sh[2], h, w}
	return b.wrap(osh, x.DType(), nhwc, b.logical(x, xs))
}

// Reshape returns x with a new shape of the same element count, sharing
// memory unless x is a channels-last image changing shape.
func (b *Backend) Reshape(x *tensor.Tensor, shape tensor.Shape) *tensor.Tensor {
	const op = "Reshape"
	xs := b.st(op, x)
	for _, d := range shape {
		if d < 0 {
			fail(op, "negative dimension in shape %s", shape)
		}
	}
	if shape.Numel() != x.Numel() {
		fail(op, "cannot reshape %s (%d elements) to %s (%d elements)", x.Shape(), x.Numel(), shape, shape.Numel())
	}
	// A channels-last image keeps its memory under any (B, C, H', W') with
	// H'·W' = H·W: the pixels stay in the same order.
	if xs.layout == nhwc && len(shape) == 4 && shape[0] == x.Dim(0) && shape[1] == x.Dim(1) {
		return b.wrap(shape, x.DType(), nhwc, xs.buf)
	}
	return b.wrap(shape, x.DType(), rowMajor, b.logical(x, xs))
}

// int32Buffer records uploading host integers.
func (b *Backend) int32Buffer(vals []int32) *buffer {
	raw := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(v))
	}
	buf := b.d.newBuffer(int64(len(raw)))
	b.d.uploadRecord(buf, raw)
	return buf
}

// Embedding looks up rows of table (V, D) for ids laid out as shape →
// (shape..., D).
func (b *Backend) Embedding(table *tensor.Tensor, ids []int32, shape tensor.Shape) *tensor.Tensor {
	const op = "Embedding"
	ts := b.st(op, table)
	if len(table.Shape()) != 2 {
		fail(op, "table %s is not 2-D", table.Shape())
	}
	if shape.Numel() != len(ids) {
		fail(op, "ids shape %s holds %d ids, got %d", shape, shape.Numel(), len(ids))
	}
	v, dim := table.Dim(0), table.Dim(1)
	for i, id := range ids {
		if id < 0 || int(id) >= v {
			fail(op, "id %d at position %d outside table %s", id, i, table.Shape())
		}
	}
	osh := append(shape.Clone(), dim)
	dt := table.DType()
	out := b.newOut(op, osh, dt)
	if len(ids) == 0 || dim == 0 {
		return b.wrap(osh, dt, rowMajor, out)
	}
	idb := b.int32Buffer(ids)
	b.d.launch("embedding"+suffix(dt), b.d.grid1(len(ids)*dim), out, pbuf(out), pbuf(ts.buf), pbuf(idb), i32(len(ids)), i32(dim))
	return b.wrap(osh, dt, rowMajor, out)
}

// GatherRows picks row rows[b] of each batch element: x (B, L, D) → (B, D).
func (b *Backend) GatherRows(x *tensor.Tensor, rows []int) *tensor.Tensor {
	const op = "GatherRows"
	xs := b.st(op, x)
	if len(x.Shape()) != 3 {
		fail(op, "x %s is not (B, L, D)", x.Shape())
	}
	bn, l, dim := x.Dim(0), x.Dim(1), x.Dim(2)
	if len(rows) != bn {
		fail(op, "%d rows for x %s with batch %d", len(rows), x.Shape(), bn)
	}
	r32 := make([]int32, bn)
	for i, r := range rows {
		if r < 0 || r >= l {
			fail(op, "row %d for batch %d outside x %s", r, i, x.Shape())
		}
		r32[i] = int32(r)
	}
	dt := x.DType()
	osh := tensor.Shape{bn, dim}
	out := b.newOut(op, osh, dt)
	if bn == 0 || dim == 0 {
		return b.wrap(osh, dt, rowMajor, out)
	}
	rb := b.int32Buffer(r32)
	b.d.launch("gather_rows"+suffix(dt), b.d.grid1(bn*dim), out, pbuf(out), pbuf(xs.buf), pbuf(rb), i32(bn), i32(l), i32(dim))
	return b.wrap(osh, dt, rowMajor, out)
}

// LayerNorm normalises over the last dimension, then applies w and b
// (either may be nil).
func (b *Backend) LayerNorm(x, w, bias *tensor.Tensor, eps float32) *tensor.Tensor {
	const op = "LayerNorm"
	xs := b.st(op, x)
	sh := x.Shape()
	if len(sh) < 1 {
		fail(op, "x %s has no feature dimension", sh)
	}
	dim := sh[len(sh)-1]
	wb := b.f32Param(op, "weight", w, dim, x)
	bb := b.f32Param(op, "bias", bias, dim, x)
	dt := x.DType()
	out := b.newOut(op, sh, dt)
	if dim == 0 || x.Numel() == 0 {
		return b.wrap(sh, dt, rowMajor, out)
	}
	rows := x.Numel() / dim
	xb := b.logical(x, xs)
	if n := vecN(dt); dim%n == 0 && dim <= 8*32*n {
		cfg := launchCfg{grid: [3]uint32{uint32((rows + 7) / 8), 1, 1}, block: [3]uint32{256, 1, 1}}
		b.d.launch("layernorm_warp"+suffix(dt), cfg, out, pbuf(out), pbuf(xb), pOpt(wb), pOpt(bb), i32(rows), i32(dim), f32(eps))
		return b.wrap(sh, dt, rowMajor, out)
	}
	threads := 256
	for threads > 32 && threads/2 >= dim {
		threads /= 2
	}
	cfg := launchCfg{grid: [3]uint32{uint32(rows), 1, 1}, block: [3]uint32{uint32(threads), 1, 1}}
	b.d.launch("layernorm"+suffix(dt), cfg, out, pbuf(out), pbuf(xb), pOpt(wb), pOpt(bb), i32(dim), f32(eps))
	return b.wrap(sh, dt, rowMajor, out)
}

// gnFusedSmem bounds the shared memory of one gn_fused block where the
// device does not say how much a block may opt into (sm_86/89 allow 99 KiB).
const gnFusedSmem = 96 << 10

// gnFusedPlan decides whether a group norm of bn images of hw pixels and c
// channels in groups runs as one gn_fused pass, and with how many groups per
// block (gpb), threads and bytes of shared memory. A block holds gpb groups'
// (hw, gpb·c/groups) slab, up to the shared memory a block may opt into;
// gpb grows past 1 (wider rows, better copies) only while the grid still
// has two blocks per SM and the slab leaves room for two blocks per SM.
// Alone on fresh data the three passes beat it for 80–160 KiB slabs over
// many waves (64², batch 32), but inside a UNet step, where x was just
// written and sits in L2, the one pass was faster in total (H200, batch
// 16: 5.8 against 6.2 ms; docs/benchmarks.md), so it is used wherever it
// fits. KILN_CUDA_GROUPNORM=3pass (Options.GroupNorm) turns it off.
func (d *Device) gnFusedPlan(bn, hw, c, groups, esize int) (gpb, threads, smem int, ok bool) {
	if d.opts.GroupNorm == "3pass" {
		return 0, 0, 0, false
	}
	cpg := c / groups
	limit := gnFusedSmem
	if d.info.MaxSharedOpt > limit {
		limit = d.info.MaxSharedOpt - 2<<10 // one block per SM at the largest
	}
	bytes := func(g int) int { return hw*g*cpg*esize + (3*g*cpg+2*g)*4 + 16 }
	if cpg > 1024 || bytes(1) > limit {
		return 0, 0, 0, false
	}
	gpb = 1
	for groups%(2*gpb) == 0 && 2*gpb*cpg <= 512 && bytes(2*gpb) <= gnFusedSmem && groups/(2*gpb)*bn >= 2*max(d.info.SMs, 1) {
		gpb *= 2
	}
	threads = 512
	if gpb*cpg > threads {
		threads = 1024
	}
	return gpb, threads, bytes(gpb), true
}

// GroupNorm normalises x (B, C, ...) over groups of channels and the
// spatial positions, applies per-channel w and b (either may be nil) and
// then SiLU when silu is set. It runs on the channels-last layout: in one
// pass through shared memory where a block's groups fit (gnFusedPlan),
// else in three passes: partial sums over slices of the image, per-group
// statistics, and the affine application.
func (b *Backend) GroupNorm(x, w, bias *tensor.Tensor, groups int, eps float32, silu bool) *tensor.Tensor {
	const op = "GroupNorm"
	xs := b.st(op, x)
	sh := x.Shape()
	if len(sh) < 2 {
		fail(op, "x %s must be at least (B, C)", sh)
	}
	bn, c := sh[0], sh[1]
	if groups < 1 || c%groups != 0 {
		fail(op, "%d channels of x %s do not divide into %d groups", c, sh, groups)
	}
	wb := b.f32Param(op, "weight", w, c, x)
	bb := b.f32Param(op, "bias", bias, c, x)
	dt := x.DType()
	hw := sh[2:].Numel()
	out := b.newOut(op, sh, dt)
	lay := nhwc
	if len(sh) != 4 {
		lay = rowMajor
	}
	if x.Numel() == 0 {
		return b.wrap(sh, dt, lay, out)
	}
	var xb *buffer
	if len(sh) == 4 {
		xb = b.channelsLast(x, xs)
	} else {
		xb = b.d.newBuffer(int64(x.Numel()) * int64(dt.Size()))
		b.transpose(xb, xs.buf, dt, bn, c, hw)
	}
	s := 0
	if silu {
		s = 1
	}
	if len(sh) == 4 {
		if gpb, threads, smem, ok := b.d.gnFusedPlan(bn, hw, c, groups, dt.Size()); ok {
			b.d.launch("gn_fused"+suffix(dt), launchCfg{grid: [3]uint32{uint32(groups / gpb), uint32(bn), 1}, block: [3]uint32{uint32(threads), 1, 1}, shmem: uint32(smem)},
				out, pbuf(out), pbuf(xb), pOpt(wb), pOpt(bb), i32(hw), i32(c), i32(c/groups), i32(gpb), f32(eps), i32(s))
			return b.wrap(sh, dt, nhwc, out)
		}
	}
	// Enough blocks to fill the GPU even for small images (one pixel per
	// block at worst), at most 64 partial sums per channel to add up.
	splits := max(1, min((2*max(b.d.info.SMs, 1)+bn-1)/bn, hw, 64))
	cpg := c / groups
	if cpg > 1024 {
		fail(op, "%d channels per group exceed the group-norm kernel", cpg)
	}
	ws := b.d.newBuffer(int64(bn*splits*c) * 8)
	ab := b.d.newBuffer(int64(bn*c) * 8)
	threads := 256
	if cv := c / vecN(dt); c%vecN(dt) == 0 && cv > 256 {
		threads = min(1024, (cv+31)/32*32)
	}
	if 8*c > 48<<10 {
		fail(op, "%d channels exceed the group-norm kernel's shared memory", c)
	}
	b.d.launch("gn_sums"+suffix(dt), launchCfg{grid: [3]uint32{uint32(splits), uint32(bn), 1}, block: [3]uint32{uint32(threads), 1, 1}, shmem: uint32(8 * c)},
		ws, pbuf(ws), pbuf(xb), i32(hw), i32(c), i32(splits))
	gpb := max(1, 128/cpg)
	b.d.launch("gn_affine"+suffix(dt), launchCfg{grid: [3]uint32{uint32((groups + gpb - 1) / gpb), uint32(bn), 1}, block: [3]uint32{uint32(gpb * cpg), 1, 1}},
		ab, pbuf(ab), pbuf(ws), pbuf(xb), pOpt(wb), pOpt(bb), i32(hw), i32(c), i32(groups), i32(splits), f32(eps))
	if len(sh) == 4 {
		b.d.launch("gn_apply"+suffix(dt), b.d.grid1(x.Numel()/vecN(dt)+1), out, pbuf(out), pbuf(xb), pbuf(ab), i32(bn), i32(hw), i32(c), i32(s))
		return b.wrap(sh, dt, nhwc, out)
	}
	tmp := b.d.newBuffer(int64(x.Numel()) * int64(dt.Size()))
	b.d.launch("gn_apply"+suffix(dt), b.d.grid1(x.Numel()/vecN(dt)+1), tmp, pbuf(tmp), pbuf(xb), pbuf(ab), i32(bn), i32(hw), i32(c), i32(s))
	b.transpose(out, tmp, dt, bn, hw, c)
	return b.wrap(sh, dt, rowMajor, out)
}
