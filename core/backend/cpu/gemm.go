package cpu

import (
	"sync"
	"sync/atomic"
)

// The matrix multiply follows the BLIS/GotoBLAS scheme: the output C is cut
// into tiles handed to worker goroutines; within a tile, blocks of kc rows
// of op(B) are packed into strips of nr columns (kept in L3/L2), blocks of mc
// rows of A into strips of mr rows (kept in L2), and a register-tiled
// micro-kernel multiplies one mr-strip by one nr-strip (kept in L1).
const (
	gemmKC = 192 // depth of a packed block: a 32-wide strip of B (24 KiB) and a 12-row strip of A stay in L1
	gemmMC = 144 // rows of A per packed block (a multiple of every mr)
	// Widest block of op(B) packed at once by a serial GEMM.
	tnMax = 1024
)

// microKernel multiplies packed panels: for a full mr×nr tile it adds
// Σ_p a[p·mr+i]·b[p·nr+j] over k steps into c[i·ldc+j].
type microKernel struct {
	name   string
	mr, nr int
	fn     func(k int, a, b, c []float32, ldc int)
	// rowA, where present, is fn reading A in place: row i of the strip at
	// a[i·lda:], used when packing A would cost more than it saves.
	rowA func(k int, a []float32, lda int, b, c []float32, ldc int)
	simd bool // an assembly kernel
}

// useRowA reports whether kern reads A in place (no packing) for a row
// stride of lda floats. Measured on this project's machine, in-place reads
// beat packing at every size; strides that are multiples of 4 KiB are the
// exception: the mr rows would then compete for the same L1 cache sets.
func useRowA(kern *microKernel, lda int) bool {
	return kern.rowA != nil && lda%1024 != 0
}

// swapRows is the most rows of A for which a product with a stored Bᵀ (a
// Linear weight) is computed as Cᵀ = B·Aᵀ, so that the large weight is read
// in place instead of being packed.
const swapRows = 128

// bSource packs a block of op(B), the k×n right-hand matrix.
type bSource interface {
	// pack writes rows [p0, p0+kc) and columns [j0, j0+nc) as consecutive
	// strips of nr columns: strip s occupies dst[s·kc·nr:], element (p, j)
	// of the strip at p·nr + j. Columns at or beyond n are zero.
	pack(dst []float32, p0, kc, j0, nc, nr int)
}

// matB is op(B) stored row-major as k×n with row stride ld.
type matB struct {
	data []float32
	ld   int
	n    int
}

func (m matB) pack(dst []float32, p0, kc, j0, nc, nr int) {
	for s := 0; s*nr < nc; s++ {
		js := j0 + s*nr
		w := min(nr, m.n-js)
		strip := dst[s*kc*nr : (s+1)*kc*nr]
		for p := 0; p < kc; p++ {
			row := m.data[(p0+p)*m.ld+js : (p0+p)*m.ld+js+w]
			d := strip[p*nr : p*nr+nr]
			copy(d, row)
			clear(d[w:])
		}
	}
}

// matBT is op(B) = Bᵀ where B is stored row-major as n×k with row stride ld
// (a Linear weight, or the keys of attention).
type matBT struct {
	data []float32
	ld   int
	n    int
}

func (m matBT) pack(dst []float32, p0, kc, j0, nc, nr int) {
	for s := 0; s*nr < nc; s++ {
		js := j0 + s*nr
		w := min(nr, m.n-js)
		strip := dst[s*kc*nr : (s+1)*kc*nr]
		for j := 0; j < w; j++ {
			col := m.data[(js+j)*m.ld+p0 : (js+j)*m.ld+p0+kc]
			for p, v := range col {
				strip[p*nr+j] = v
			}
		}
		if w < nr {
			for p := 0; p < kc; p++ {
				clear(strip[p*nr+w : p*nr+nr])
			}
		}
	}
}

// packA writes rows [i0, i0+mc) and columns [p0, p0+kc) of the row-major
// m×k matrix a as strips of mr rows: strip s at dst[s·kc·mr:], element
// (i, p) of the strip at p·mr + i. Rows at or beyond m are zero.
func packA(dst, a []float32, lda, m, i0, mc, p0, kc, mr int) {
	for s := 0; s*mr < mc; s++ {
		is := i0 + s*mr
		h := min(mr, m-is)
		strip := dst[s*kc*mr : (s+1)*kc*mr]
		for i := 0; i < h; i++ {
			row := a[(is+i)*lda+p0 : (is+i)*lda+p0+kc]
			for p, v := range row {
				strip[p*mr+i] = v
			}
		}
		if h < mr {
			for p := 0; p < kc; p++ {
				clear(strip[p*mr+h : p*mr+mr])
			}
		}
	}
}

// gemmWork is a worker's packing space.
type gemmWork struct {
	a, b []float32
	edge []float32
}

// gemmProblem describes C += A·op(B) with A m×k row-major (row stride lda)
// and C m×n row-major (row stride ldc).
type gemmProblem struct {
	m, n, k int
	a       []float32
	lda     int
	b       bSource
	c       []float32
	ldc     int
}

// tile computes rows [m0, m1) and columns [n0, n1) of C serially.
func (g *gemmProblem) tile(kern *microKernel, w *gemmWork, m0, m1, n0, n1 int) {
	mr, nr := kern.mr, kern.nr
	nc := n1 - n0
	ncPad := (nc + nr - 1) / nr * nr
	if need := gemmKC * ncPad; len(w.b) < need {
		w.b = make([]float32, need)
	}
	if need := gemmKC * gemmMC; len(w.a) < need {
		w.a = make([]float32, need)
	}
	if len(w.edge) < mr*nr {
		w.edge = make([]float32, mr*nr)
	}
	for p0 := 0; p0 < g.k; p0 += gemmKC {
		kc := min(gemmKC, g.k-p0)
		g.b.pack(w.b, p0, kc, n0, nc, nr)
		strips := (nc + nr - 1) / nr
		rowA := useRowA(kern, g.lda)
		for i0 := m0; i0 < m1; i0 += gemmMC {
			mc := min(gemmMC, m1-i0)
			g.prepA(kern, w.a, i0, mc, p0, kc, rowA)
			g.macro(kern, w, w.a, w.b, kc, i0, mc, n0, nc, 0, strips, p0, rowA)
		}
	}
}

// prepA packs rows [i0, i0+mc) and depth [p0, p0+kc) of A into ap as
// strips of mr rows: all of them, or with rowA only a final partial strip
// (full strips are then read in place).
func (g *gemmProblem) prepA(kern *microKernel, ap []float32, i0, mc, p0, kc int, rowA bool) {
	mr := kern.mr
	if !rowA {
		packA(ap, g.a, g.lda, g.m, i0, mc, p0, kc, mr)
		return
	}
	if rem := mc % mr; rem != 0 {
		packA(ap[(mc/mr)*kc*mr:], g.a, g.lda, g.m, i0+mc-rem, rem, p0, kc, mr)
	}
}

// macro multiplies a block of A (rows [i0, i0+mc), depth [p0, p0+kc),
// its strips packed at ap as prepA leaves them) by the packed strips [s0, s1) of a block of op(B) that
// starts at column j0 and is nc columns wide, adding into C.
func (g *gemmProblem) macro(kern *microKernel, w *gemmWork, ap, bp []float32, kc, i0, mc, j0, nc, s0, s1, p0 int, rowA bool) {
	mr, nr := kern.mr, kern.nr
	for js := s0; js < s1; js++ {
		bs := bp[js*kc*nr : (js+1)*kc*nr]
		j := j0 + js*nr
		wj := min(nr, j0+nc-j)
		for is := 0; is*mr < mc; is++ {
			i := i0 + is*mr
			hi := min(mr, i0+mc-i)
			inPlace := rowA && hi == mr
			as := g.a[i*g.lda+p0:]
			if !inPlace {
				as = ap[is*kc*mr : (is+1)*kc*mr]
			}
			if hi == mr && wj == nr {
				if inPlace {
					kern.rowA(kc, as, g.lda, bs, g.c[i*g.ldc+j:], g.ldc)
				} else {
					kern.fn(kc, as, bs, g.c[i*g.ldc+j:], g.ldc)
				}
				continue
			}
			e := w.edge[:mr*nr]
			clear(e)
			if inPlace {
				kern.rowA(kc, as, g.lda, bs, e, nr)
			} else {
				kern.fn(kc, as, bs, e, nr)
			}
			for r := 0; r < hi; r++ {
				cr := g.c[(i+r)*g.ldc+j : (i+r)*g.ldc+j+wj]
				for q, v := range e[r*nr : r*nr+wj] {
					cr[q] += v
				}
			}
		}
	}
}

// serial computes the whole problem on the calling goroutine.
func (g *gemmProblem) serial(kern *microKernel, w *gemmWork) {
	if g.m == 0 || g.n == 0 || g.k == 0 {
		return
	}
	for n0 := 0; n0 < g.n; n0 += tnMax {
		g.tile(kern, w, 0, g.m, n0, min(g.n, n0+tnMax))
	}
}

// gemmWorkPool hands out packing space to workers.
type gemmWorkPool struct{ p sync.Pool }

func (wp *gemmWorkPool) get() *gemmWork {
	if w, ok := wp.p.Get().(*gemmWork); ok {
		return w
	}
	return &gemmWork{}
}

func (wp *gemmWorkPool) put(w *gemmWork) { wp.p.Put(w) }

// gemmNC is the widest block of op(B) packed at once in the threaded GEMM
// (kc × nc floats shared by all workers, kept in the last-level cache).
const gemmNC = 4096

// runGemm computes the problem across the backend's threads. For each
// block of kc rows and nc columns of op(B), the workers first pack that
// block of B and the matching depth of A together, then share out units of
// (gemmMC rows of A) × (a run of B strips).
func (be *Backend) runGemm(g *gemmProblem) {
	if g.m == 0 || g.n == 0 || g.k == 0 {
		return
	}
	kern := be.kernel
	mr, nr := kern.mr, kern.nr
	if be.threads == 1 || 2*g.m*g.n*g.k < 1<<18 {
		w := be.work.get()
		g.serial(kern, w)
		be.work.put(w)
		return
	}
	shared := be.work.get()
	defer be.work.put(shared)
	nc := min((g.n+nr-1)/nr*nr, gemmNC)
	if need := gemmKC * nc; len(shared.b) < need {
		shared.b = make([]float32, need)
	}
	aStrips := (g.m + mr - 1) / mr
	if need := gemmKC * aStrips * mr; len(shared.a) < need {
		shared.a = make([]float32, need)
	}
	mBlocks := (g.m + gemmMC - 1) / gemmMC
	for j0 := 0; j0 < g.n; j0 += nc {
		ncj := min(nc, g.n-j0)
		strips := (ncj + nr - 1) / nr
		// Split the columns so that there are a few units per thread.
		split := min(strips, max(1, (4*be.threads+mBlocks-1)/mBlocks))
		perUnit := (strips + split - 1) / split
		split = (strips + perUnit - 1) / perUnit
		units := mBlocks * split
		rowA := useRowA(kern, g.lda)
		// Where several units share rows of A, A is packed once for all of
		// them: every strip, or with rowA only a final partial one. Else each
		// unit packs its own rows right before use, while they are in cache.
		aFirst := aStrips
		switch {
		case rowA:
			aFirst = g.m / mr
		case split > 1:
			aFirst = 0
		}
		for p0 := 0; p0 < g.k; p0 += gemmKC {
			kc := min(gemmKC, g.k-p0)
			bp := shared.b[:kc*strips*nr]
			ap := shared.a[:kc*aStrips*mr]
			be.parallelFor(strips+aStrips-aFirst, 1, func(lo, hi int) {
				for t := lo; t < hi; t++ {
					if t < strips {
						jl := j0 + t*nr
						g.b.pack(bp[t*kc*nr:(t+1)*kc*nr], p0, kc, jl, min(nr, ncj-t*nr), nr)
						continue
					}
					sa := aFirst + t - strips
					packA(ap[sa*kc*mr:(sa+1)*kc*mr], g.a, g.lda, g.m, sa*mr, min(mr, g.m-sa*mr), p0, kc, mr)
				}
			})
			var next atomic.Int64
			be.parallelFor(min(be.threads, units), 1, func(_, _ int) {
				w := be.work.get()
				defer be.work.put(w)
				if len(w.edge) < mr*nr {
					w.edge = make([]float32, mr*nr)
				}
				if need := gemmKC * gemmMC; aFirst == aStrips && len(w.a) < need {
					w.a = make([]float32, need)
				}
				for {
					u := int(next.Add(1) - 1)
					if u >= units {
						return
					}
					mb, sb := u/split, u%split
					i0 := mb * gemmMC
					mc := min(gemmMC, g.m-i0)
					s0, s1 := sb*perUnit, min(strips, sb*perUnit+perUnit)
					a := ap[(i0/mr)*kc*mr:]
					if aFirst == aStrips { // not packed in common
						a = w.a
						g.prepA(kern, a, i0, mc, p0, kc, false)
					}
					g.macro(kern, w, a, bp, kc, i0, mc, j0, ncj, s0, s1, p0, rowA)
				}
			})
		}
	}
}

// gemm accumulates C += A·op(B) for row-major float32 matrices: A is m×k
// with row stride lda; op(B) is k×n, stored as B (k×n, row stride ldb) or,
// when transB is set, as Bᵀ (n×k, row stride ldb); C is m×n with row
// stride ldc. Work is spread over the backend's threads.
func (be *Backend) gemm(m, n, k int, a []float32, lda int, b []float32, ldb int, transB bool, c []float32, ldc int) {
	if m == 0 || n == 0 || k == 0 {
		return
	}
	kern := be.kernel
	if transB && useRowA(kern, ldb) && m <= swapRows && n > m {
		// Few rows against a large stored Bᵀ (a Linear on a few tokens):
		// packing that weight would cost more than the product, so compute
		// Cᵀ = B·Aᵀ with the weight read in place as the left operand.
		t := be.pool.get(n * m)
		clear(t)
		be.runGemm(&gemmProblem{m: n, n: m, k: k, a: b, lda: ldb, b: matBT{data: a, ld: lda, n: m}, c: t, ldc: m})
		for i := 0; i < m; i++ {
			ci := c[i*ldc : i*ldc+n]
			for j := range ci {
				ci[j] += t[j*m+i]
			}
		}
		be.pool.put(t)
		return
	}
	var src bSource = matB{data: b, ld: ldb, n: n}
	if transB {
		src = matBT{data: b, ld: ldb, n: n}
	}
	be.runGemm(&gemmProblem{m: m, n: n, k: k, a: a, lda: lda, b: src, c: c, ldc: ldc})
}

// gemmNaive is the straightforward kernel over rows [lo, hi) of C, the
// reference the blocked kernel is tested against.
func gemmNaive(lo, hi, n, k int, a []float32, lda int, b []float32, ldb int, transB bool, c []float32, ldc int) {
	for i := lo; i < hi; i++ {
		ci := c[i*ldc : i*ldc+n]
		ai := a[i*lda : i*lda+k]
		if transB {
			for j := range ci {
				bj := b[j*ldb : j*ldb+k]
				var s float32
				for p, av := range ai {
					s += av * bj[p]
				}
				ci[j] += s
			}
			continue
		}
		for p, av := range ai {
			bp := b[p*ldb : p*ldb+n]
			for j, bv := range bp {
				ci[j] += av * bv
			}
		}
	}
}

// packedB is op(B) packed once in full for repeated serial GEMMs against
// it (attention reuses one head's keys and values for every block of
// queries): k-blocks of gemmKC rows, each as strips of nr columns.
type packedB struct {
	k, n, nr int
	data     []float32
}

// blockOffset returns where k-block p0 starts and how deep it is.
func (pb *packedB) blockOffset(p0 int) (off, kc int) {
	strips := (pb.n + pb.nr - 1) / pb.nr
	return p0 * strips * pb.nr, min(gemmKC, pb.k-p0)
}

// packFull packs all of src (k×n) for micro-kernels nr wide into buf,
// growing it as needed, and returns the packed matrix.
func packFull(buf []float32, src bSource, k, n, nr int) packedB {
	strips := (n + nr - 1) / nr
	need := k * strips * nr
	if cap(buf) < need {
		buf = make([]float32, need)
	}
	pb := packedB{k: k, n: n, nr: nr, data: buf[:need]}
	for p0 := 0; p0 < k; p0 += gemmKC {
		off, kc := pb.blockOffset(p0)
		src.pack(pb.data[off:off+kc*strips*nr], p0, kc, 0, n, nr)
	}
	return pb
}

// gemmPacked accumulates C += A·B serially for a B packed by packFull with
// kern's nr; A is m×pb.k row-major (row stride lda), C m×pb.n (stride ldc).
func gemmPacked(kern *microKernel, w *gemmWork, m int, a []float32, lda int, pb packedB, c []float32, ldc int) {
	if kern.nr != pb.nr {
		panic("cpu: packed B for another micro-kernel")
	}
	if need := gemmKC * gemmMC; len(w.a) < need {
		w.a = make([]float32, need)
	}
	if len(w.edge) < kern.mr*kern.nr {
		w.edge = make([]float32, kern.mr*kern.nr)
	}
	g := gemmProblem{m: m, n: pb.n, k: pb.k, a: a, lda: lda, c: c, ldc: ldc}
	strips := (pb.n + pb.nr - 1) / pb.nr
	rowA := useRowA(kern, lda)
	for p0 := 0; p0 < pb.k; p0 += gemmKC {
		off, kc := pb.blockOffset(p0)
		bp := pb.data[off : off+kc*strips*pb.nr]
		for i0 := 0; i0 < m; i0 += gemmMC {
			mc := min(gemmMC, m-i0)
			g.prepA(kern, w.a, i0, mc, p0, kc, rowA)
			g.macro(kern, w, w.a, bp, kc, i0, mc, 0, pb.n, 0, strips, p0, rowA)
		}
	}
}

// narrowKernel returns the assembly micro-kernel that does the least work
// on an m×n product counting padding: each kernel call issues 2·mr vector
// FMAs per step whatever its width, so the cost is ⌈m/mr⌉·mr·⌈n/nr⌉.
func narrowKernel(best *microKernel, m, n int, all []*microKernel) *microKernel {
	cost := func(k *microKernel) int { return (m + k.mr - 1) / k.mr * k.mr * ((n + k.nr - 1) / k.nr) }
	pick := best
	for _, k := range all {
		if k.simd && cost(k) < cost(pick) {
			pick = k
		}
	}
	return pick
}
