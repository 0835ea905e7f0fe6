package cuda

import (
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda/internal/cublas"
)

// The fp8 precision (Options.Precision "fp8", KILN_CUDA_PRECISION=fp8) runs
// the large matrix products of Linear layers and 1×1 convolutions (the
// attention projections, the feed-forward layers, the transformers'
// projections) as cuBLASLt E4M3 products with one float32 scale per tensor:
// a weight is quantised once, on first use, into a copy kept next to its
// fp16 original (scale = amax/448); an activation is quantised in the step
// itself by two kernels (kernels/sm90a/fp8.cu: partial maxima, then the
// scale and the conversion). Accumulation is float32 (cuBLASLt's fast fp8
// mode), the result, bias and residual stay fp16/bf16. It needs the Hopper
// image (sm_90) and cuBLASLt; elsewhere, and for products too small to gain
// (fewer than fp8MinWork multiply-adds, or sizes not multiples of 16), the
// products stay in the activation dtype.

// q8Parts is the most blocks the amax kernel runs (Q8_PARTS in fp8.cu).
const q8Parts = 1024

// fp8MinWork is the fewest multiply-adds (m·n·k) a product needs to run in
// fp8: below it the two quantisation launches cost more than the faster
// product saves.
const fp8MinWork = 1 << 30

// q8ScaleOff is where the float32 scale of an E4M3 copy of n elements lies
// in its buffer (after the elements, 256-byte aligned).
func q8ScaleOff(n int) int64 { return (int64(n) + 255) &^ 255 }

// q8Size is the size of the buffer of an E4M3 copy of n elements and its
// scale.
func q8Size(n int) int64 { return q8ScaleOff(n) + 256 }

// q8Grids are the launch shapes of the amax and quantisation kernels for
// n elements (8 per thread).
func (d *Device) q8Grids(n int) (amax, quant launchCfg) {
	blocks := (n/8 + 255) / 256
	amax = launchCfg{grid: [3]uint32{uint32(max(1, min(blocks, q8Parts))), 1, 1}, block: [3]uint32{256, 1, 1}}
	quant = launchCfg{grid: [3]uint32{uint32(max(1, min(blocks, d.info.SMs*8))), 1, 1}, block: [3]uint32{256, 1, 1}}
	return amax, quant
}

// fp8Ready reports whether fp8 products can run on d: the option is set,
// cuBLASLt is there and the Hopper image with the quantisation kernels
// loaded.
func (d *Device) fp8Ready() bool {
	if d.opts.Precision != "fp8" {
		return false
	}
	if d.fp8 == 0 {
		d.fp8 = -1
		ok := false
		_ = d.run(func() error {
			ok = d.eng.hasKernel("q8_quant_f16") && d.eng.hasKernel("q8_amax_f16")
			return nil
		})
		if ok && d.hasLt() {
			d.fp8 = 1
		}
	}
	return d.fp8 == 1
}

// FP8 reports whether the device runs the large matrix products in fp8
// (Options.Precision "fp8" on a device that supports it).
func (d *Device) FP8() bool { return d.fp8Ready() }

// linear8 records out (m, n) = x (m, k) · w (n, k)ᵀ + bias as an fp8
// product when the precision and the shape call for it, and reports
// whether it did; w must be an uploaded weight.
func (b *Backend) linear8(out, x, w, bias *buffer, m, n, k int, dt tensor.DType) bool {
	d := b.d
	if dt != tensor.F16 && dt != tensor.BF16 || m%16 != 0 || n%16 != 0 || k%16 != 0 || int64(m)*int64(n)*int64(k) < d.fp8Min {
		return false
	}
	if !d.fp8Ready() {
		return false
	}
	wq := d.weight8(w, n*k, dt)
	if wq == nil {
		return false
	}
	xq := b.quant8(x, m*k, dt)
	biasT := d.biasIn(bias, dt, n)
	sh := cublas.LtShape{TransA: cublas.OpT, TransB: cublas.OpN, M: n, N: m, K: k, LDA: k, LDB: k, LDC: n, Type: blasType(dt)}
	var lb *buffer
	if bias != nil && biasT != nil {
		sh.Bias, lb = true, biasT
	}
	d.lt8Record(sh, bufRef{buf: wq}, bufRef{buf: xq}, bufRef{buf: wq, off: q8ScaleOff(n * k)}, bufRef{buf: xq, off: q8ScaleOff(m * k)}, lb, out)
	if bias != nil && lb == nil {
		b.biasAct(out, out, bias, m, n, dt, 0)
	}
	return true
}

// quant8 records the E4M3 quantisation of the n elements of x (dt) into a
// new buffer laid out as q8Size describes. Products reading the same
// activation (a layer's q, k and v projections) share one quantisation.
func (b *Backend) quant8(x *buffer, n int, dt tensor.DType) *buffer {
	d := b.d
	if d.q8seg != d.seg {
		d.q8seg, d.q8memo = d.seg, map[*buffer]q8Memo{}
	}
	if m, ok := d.q8memo[x]; ok && m.n == n && m.dt == dt && !writtenSince(d.seg, x, m.at) {
		return m.q
	}
	part := d.newBuffer(q8Parts * 4)
	q := d.newBuffer(q8Size(n))
	ga, gq := d.q8Grids(n)
	sfx := suffix(dt)
	d.launch("q8_amax"+sfx, ga, part, pbuf(part), pbuf(x), u32(n))
	d.launch("q8_quant"+sfx, gq, q, pbuf(q), arg{buf: q, off: q8ScaleOff(n), size: 8}, pbuf(x), pbuf(part), u32(int(ga.grid[0])), u32(n))
	if !d.scratch {
		d.q8memo[x] = q8Memo{q: q, n: n, dt: dt, at: len(d.seg.recs)}
	}
	return q
}

// q8Memo is an activation's quantisation recorded in the current segment:
// its buffer, and how many records the segment had then.
type q8Memo struct {
	q  *buffer
	n  int
	dt tensor.DType
	at int
}

// writtenSince reports whether a record of seg from index at on writes x.
func writtenSince(seg *segment, x *buffer, at int) bool {
	for _, r := range seg.recs[at:] {
		if r.writes == x {
			return true
		}
	}
	return false
}

// weight8 returns w's E4M3 copy (n elements, scale after them), making it
// on first use; nil where w is not an uploaded weight or the copy fails.
func (d *Device) weight8(w *buffer, n int, dt tensor.DType) *buffer {
	if !w.weight || w.seg != nil || !w.own {
		return nil
	}
	if w.q8 != nil {
		return w.q8
	}
	c := &buffer{size: q8Size(n), weight: true}
	ga, gq := d.q8Grids(n)
	sfx := suffix(dt)
	err := d.run(func() error {
		a, class, err := d.alloc.alloc(c.size)
		if err != nil {
			return err
		}
		c.addr, c.own, c.ownSize = a, true, class
		d.addWeights(c.size)
		pa, pclass, err := d.alloc.alloc(q8Parts * 4)
		if err != nil {
			return err
		}
		// Released at once: later work that reuses the block runs after
		// these kernels on the same stream.
		defer d.alloc.release(pa, pclass)
		if err := d.eng.launch("q8_amax"+sfx, ga, []karg{{pa, 8}, {w.addr, 8}, {uint64(uint32(n)), 4}}); err != nil {
			return err
		}
		return d.eng.launch("q8_quant"+sfx, gq, []karg{{a, 8}, {a + uint64(q8ScaleOff(n)), 8}, {w.addr, 8}, {pa, 8},
			{uint64(ga.grid[0]), 4}, {uint64(uint32(n)), 4}})
	})
	if err != nil {
		if c.own {
			d.releaseBuffer(c)
		}
		return nil
	}
	w.q8 = c
	return c
}
