package cuda

import (
	"fmt"
	"math"

	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda/cudnn"
)

// Convolution and matrix-product methods. On a real GPU the first use of a
// shape measures every applicable method on scratch buffers and keeps the
// fastest for the life of the device: the "measure and choose" of
// im2col + cuBLAS, Kiln's implicit GEMM and cuDNN, per shape.
type convMethod uint8

const (
	convImplicit convMethod = iota
	convCudnn
	convIm2col
)

type convPlan struct {
	method convMethod
	tile   string // implicit: "128x128", "128x64", "64x64"
	algo   int    // cudnn algorithm
}

func (p convPlan) String() string {
	switch p.method {
	case convImplicit:
		return "implicit " + p.tile
	case convCudnn:
		return fmt.Sprintf("cudnn algo %d", p.algo)
	}
	return "im2col+cublas"
}

type convKey struct {
	dt         tensor.DType
	g          convGeom
	padB, padR int
}

type linMethod uint8

const (
	linCublas linMethod = iota
	linImplicit
)

type linPlan struct {
	method linMethod
	tile   string
}

func (p linPlan) String() string {
	if p.method == linImplicit {
		return "implicit " + p.tile
	}
	return "cublas"
}

type linKey struct {
	dt      tensor.DType
	m, n, k int
	bias    bool
}

var tiles = [...]string{"128x128", "128x64", "64x64"}

// cudnnShape describes g for cuDNN; ok is false where cuDNN cannot express
// it (asymmetric padding).
func cudnnShape(g convGeom, padB, padR int, dt tensor.DType) (cudnn.ConvShape, bool) {
	if g.padT != padB || g.padL != padR {
		return cudnn.ConvShape{}, false
	}
	t := cudnn.DataFloat
	switch dt {
	case tensor.F16:
		t = cudnn.DataHalf
	case tensor.BF16:
		t = cudnn.DataBFloat16
	}
	return cudnn.ConvShape{DataType: t, N: g.bn, C: g.c, H: g.h, W: g.w, K: g.cout, R: g.kh, S: g.kw,
		PadH: g.padT, PadW: g.padL, Stride: g.stride, OutH: g.ho, OutW: g.wo}, true
}

// planConv picks how to run a convolution.
func (b *Backend) planConv(g convGeom, padB, padR int, dt tensor.DType) convPlan {
	d := b.d
	implicit := b.implicitOK(dt, g.c, g.cout)
	sh, symmetric := cudnnShape(g, padB, padR, dt)
	switch d.opts.Conv {
	case "im2col":
		return convPlan{method: convIm2col}
	case "implicit":
		if implicit {
			return convPlan{method: convImplicit, tile: b.heuristicTile(g.bn*g.ho*g.wo, g.cout)}
		}
		return convPlan{method: convIm2col}
	case "cudnn":
		if symmetric && d.hasCuDNN() {
			if algo, ok := b.findCudnn(sh, g); ok {
				return convPlan{method: convCudnn, algo: algo}
			}
		}
	}
	key := convKey{dt: dt, g: g, padB: padB, padR: padR}
	if p, ok := d.convPick[key]; ok {
		return p
	}
	fallback := convPlan{method: convIm2col}
	if implicit {
		fallback = convPlan{method: convImplicit, tile: b.heuristicTile(g.bn*g.ho*g.wo, g.cout)}
	}
	if !d.tune || d.opts.Conv != "auto" {
		return fallback
	}
	var cands []convPlan
	if implicit {
		for _, t := range tiles {
			cands = append(cands, convPlan{method: convImplicit, tile: t})
		}
	}
	if symmetric && d.hasCuDNN() {
		if algo, ok := b.findCudnn(sh, g); ok {
			cands = append(cands, convPlan{method: convCudnn, algo: algo})
		}
	}
	cands = append(cands, convPlan{method: convIm2col})
	best, bestT := fallback, math.Inf(1)
	var log []string
	x, w, bias, out, release := b.scratchConv(g, dt)
	defer release()
	for _, c := range cands {
		t, err := d.timeRecords(func() { b.emitConv(c, out, x, w, bias, dt, g) })
		if err != nil {
			log = append(log, fmt.Sprintf("%s: %v", c, err))
			continue
		}
		log = append(log, fmt.Sprintf("%s %.1fµs", c, t*1e3))
		if t < bestT {
			best, bestT = c, t
		}
	}
	d.convPick[key] = best
	d.tuneLog = append(d.tuneLog, fmt.Sprintf("conv %s %dx%dx%dx%d→%d k%dx%d s%d: %s ← %v", dt, g.bn, g.c, g.h, g.w, g.cout, g.kh, g.kw, g.stride, best, log))
	return best
}

// heuristicTile picks an implicit-GEMM tile without measuring.
func (b *Backend) heuristicTile(m, n int) string {
	if t := b.d.opts.ConvTile; t != "" {
		return t
	}
	sms := max(b.d.info.SMs, 1)
	tilesOf := func(bm, bn int) int { return ((m + bm - 1) / bm) * ((n + bn - 1) / bn) }
	switch {
	case n%128 == 0 && tilesOf(128, 128) >= sms:
		return "128x128"
	case tilesOf(128, 64) >= sms:
		return "128x64"
	}
	return "64x64"
}

// findCudnn asks cuDNN for its fastest algorithm on scratch buffers.
func (b *Backend) findCudnn(sh cudnn.ConvShape, g convGeom) (int, bool) {
	x, w, _, out, release := b.scratchConv(g, tensorOf(sh.DataType))
	defer release()
	var perf []cudnn.AlgoPerf
	err := b.d.run(func() error {
		var err error
		perf, err = b.d.eng.cudnnFind(sh, x.addr, w.addr, out.addr)
		return err
	})
	if err != nil || len(perf) == 0 {
		return 0, false
	}
	return perf[0].Algo, true
}

func tensorOf(cudnnType int) tensor.DType {
	switch cudnnType {
	case cudnn.DataHalf:
		return tensor.F16
	case cudnn.DataBFloat16:
		return tensor.BF16
	}
	return tensor.F32
}

// emitConv records the convolution by plan p.
func (b *Backend) emitConv(p convPlan, out, x, w, bias *buffer, dt tensor.DType, g convGeom) {
	switch p.method {
	case convImplicit:
		b.implicitConv(out, x, w, bias, nil, dt, g, p.tile)
	case convCudnn:
		sh, _ := cudnnShape(g, g.padT, g.padL, dt)
		b.d.cudnnRecord(sh, p.algo, x, w, out)
		if bias != nil {
			b.biasAct(out, out, bias, g.bn*g.ho*g.wo, g.cout, dt, 0)
		}
	default:
		b.im2colConv(out, x, w, bias, dt, g)
	}
}

// planLinear picks how to run a matrix product with weights.
func (b *Backend) planLinear(m, n, k int, dt tensor.DType, bias bool) linPlan {
	d := b.d
	implicit := b.implicitOK(dt, k, n)
	switch d.opts.Linear {
	case "cublas":
		return linPlan{method: linCublas}
	case "implicit":
		if implicit {
			return linPlan{method: linImplicit, tile: b.heuristicTile(m, n)}
		}
		return linPlan{method: linCublas}
	}
	key := linKey{dt: dt, m: m, n: n, k: k, bias: bias}
	if p, ok := d.linPick[key]; ok {
		return p
	}
	if !d.tune || !implicit {
		return linPlan{method: linCublas}
	}
	cands := []linPlan{{method: linCublas}}
	for _, t := range tiles {
		cands = append(cands, linPlan{method: linImplicit, tile: t})
	}
	g := convGeom{bn: 1, h: 1, w: m, c: k, ho: 1, wo: m, cout: n, kh: 1, kw: 1, stride: 1}
	x, w, bb, out, release := b.scratchConv(g, dt)
	defer release()
	if !bias {
		bb = nil
	}
	best, bestT := linPlan{method: linCublas}, math.Inf(1)
	var log []string
	for _, c := range cands {
		t, err := d.timeRecords(func() { b.emitLinear(c, out, x, w, bb, m, n, k, dt) })
		if err != nil {
			log = append(log, fmt.Sprintf("%s: %v", c, err))
			continue
		}
		log = append(log, fmt.Sprintf("%s %.1fµs", c, t*1e3))
		if t < bestT {
			best, bestT = c, t
		}
	}
	d.linPick[key] = best
	d.tuneLog = append(d.tuneLog, fmt.Sprintf("linear %s %dx%d→%d: %s ← %v", dt, m, k, n, best, log))
	return best
}

// scratchConv allocates inputs (filled with a fixed non-zero pattern),
// float32 bias and output for measuring g; release frees them.
func (b *Backend) scratchConv(g convGeom, dt tensor.DType) (x, w, bias, out *buffer, release func()) {
	d := b.d
	sizes := []int64{
		int64(g.bn*g.h*g.w*g.c) * int64(dt.Size()),
		int64(g.cout*g.kh*g.kw*g.c) * int64(dt.Size()),
		int64(g.cout) * 4,
		int64(g.bn*g.ho*g.wo*g.cout) * int64(dt.Size()),
	}
	bufs := make([]*buffer, len(sizes))
	var classes []int64
	err := d.run(func() error {
		for i, n := range sizes {
			a, c, err := d.alloc.alloc(max(n, 256))
			if err != nil {
				return err
			}
			bufs[i] = &buffer{size: max(n, 256), addr: a}
			classes = append(classes, c)
			if err := d.eng.memset(a, max(n, 256), 0x30); err != nil {
				return err
			}
		}
		return nil
	})
	release = func() {
		_ = d.run(func() error {
			for i, c := range classes {
				d.alloc.release(bufs[i].addr, c)
			}
			return nil
		})
	}
	if err != nil {
		release()
		fail("tune", "scratch buffers: %v", err)
	}
	return bufs[0], bufs[1], bufs[2], bufs[3], release
}

// timeRecords records build's work into a scratch segment, runs it once to
// warm up and then several times between events, and returns milliseconds
// per run. Buffers build creates get blocks of their own.
func (d *Device) timeRecords(build func()) (ms float64, err error) {
	saved := d.seg
	d.seg, d.scratch = &segment{}, true
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%v", r)
			}
		}()
		build()
	}()
	sc := d.seg
	d.seg, d.scratch = saved, false
	if err != nil {
		return 0, err
	}
	err = d.run(func() error {
		for _, b := range sc.bufs {
			a, c, err := d.alloc.alloc(b.size)
			if err != nil {
				return err
			}
			b.addr = a
			defer d.alloc.release(a, c)
		}
		runAll := func() error {
			for _, r := range sc.recs {
				if err := d.exec(r); err != nil {
					return err
				}
			}
			return nil
		}
		if err := runAll(); err != nil {
			return err
		}
		e0, err := d.eng.newEvent()
		if err != nil {
			return err
		}
		defer d.eng.destroyEvent(e0)
		e1, err := d.eng.newEvent()
		if err != nil {
			return err
		}
		defer d.eng.destroyEvent(e1)
		const reps = 3
		if err := d.eng.record(e0); err != nil {
			return err
		}
		for i := 0; i < reps; i++ {
			if err := runAll(); err != nil {
				return err
			}
		}
		if err := d.eng.record(e1); err != nil {
			return err
		}
		if err := d.eng.sync(); err != nil {
			return d.noteErr(err)
		}
		t, err := d.eng.elapsed(e0, e1)
		ms = float64(t) / reps
		return err
	})
	return ms, err
}

// hasCuDNN reports whether the device can use cuDNN.
func (d *Device) hasCuDNN() bool {
	ok := false
	_ = d.run(func() error { ok = d.eng.hasCuDNN(); return nil })
	return ok
}

// TuneLog returns the measured algorithm choices made so far, one line each.
func (d *Device) TuneLog() []string { return append([]string(nil), d.tuneLog...) }
