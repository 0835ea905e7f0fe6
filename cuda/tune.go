package cuda

import (
	"fmt"
	"math"

	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda/internal/cudnn"
)

// Convolution and matrix-product methods. On a real GPU the first use of a
// shape measures every applicable method on scratch buffers and keeps the
// fastest for the life of the device: the "measure and choose" of
// im2col + cuBLAS, Kiln's implicit GEMM and cuDNN, per shape.
type convMethod uint8

const (
	convImplicit convMethod = iota
	convCudnn
	convCudnnFused // bias (and a fused residual) inside cuDNN's call
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
	case convCudnnFused:
		return fmt.Sprintf("cudnn+bias algo %d", p.algo)
	}
	return "im2col+cublas"
}

type convKey struct {
	dt         tensor.DType
	g          convGeom
	padB, padR int
	fusable    bool
}

type linMethod uint8

const (
	linCublas linMethod = iota
	linImplicit
	linLt // cuBLASLt with the bias in its epilogue
)

type linPlan struct {
	method linMethod
	tile   string
}

func (p linPlan) String() string {
	switch p.method {
	case linImplicit:
		return "implicit " + p.tile
	case linLt:
		return "cublasLt"
	}
	return "cublas"
}

type linKey struct {
	dt            tensor.DType
	m, n, k       int
	bias, fusable bool
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

// planConv picks how to run a convolution. On a real GPU every candidate
// runs once on random data and must agree with im2col + cuBLAS before it is
// timed; the fastest that agrees wins.
func (b *Backend) planConv(g convGeom, padB, padR int, dt tensor.DType, fusable bool) convPlan {
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
	case "cudnn", "cudnn+bias":
		if symmetric && d.hasCuDNN() {
			if d.opts.Conv == "cudnn+bias" && fusable {
				return convPlan{method: convCudnnFused, algo: 1}
			}
			if algo, ok := b.findCudnn(sh, g); ok {
				return convPlan{method: convCudnn, algo: algo}
			}
		}
	}
	key := convKey{dt: dt, g: g, padB: padB, padR: padR, fusable: fusable}
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
	if d.deferConv(key) {
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
		if fusable {
			cands = append(cands, convPlan{method: convCudnnFused, algo: 1})
		}
	}
	cands = append(cands, convPlan{method: convIm2col})
	sc := b.scratchConv(g, dt)
	defer sc.release()
	ref := convPlan{method: convIm2col}
	if _, err := d.timeRecords(func() { b.emitConv(ref, sc.ref, sc.x, sc.w, sc.bias, sc.biasT, dt, g) }, nil); err != nil {
		d.convPick[key] = fallback
		return fallback
	}
	best, bestT := fallback, math.Inf(1)
	var log []string
	for _, c := range cands {
		t, err := d.timeRecords(func() { b.emitConv(c, sc.out, sc.x, sc.w, sc.bias, sc.biasT, dt, g) }, sc.verify(dt))
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
	sc := b.scratchConv(g, tensorOf(sh.DataType))
	defer sc.release()
	var perf []cudnn.AlgoPerf
	err := b.d.run(func() error {
		var err error
		perf, err = b.d.eng.cudnnFind(sh, sc.x.addr, sc.w.addr, sc.out.addr)
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

// emitConv records the convolution by plan p. biasT is the bias in dt,
// which the fused cuDNN call needs (nil: not available).
func (b *Backend) emitConv(p convPlan, out, x, w, bias, biasT *buffer, dt tensor.DType, g convGeom) {
	switch p.method {
	case convImplicit:
		b.implicitConv(out, x, w, bias, nil, dt, g, p.tile)
	case convCudnn, convCudnnFused:
		sh, _ := cudnnShape(g, g.padT, g.padL, dt)
		if p.method == convCudnnFused && biasT != nil {
			b.d.cudnnBiasRecord(sh, p.algo, x, w, biasT, out)
			return
		}
		b.d.cudnnRecord(sh, p.algo, x, w, out)
		if bias != nil {
			b.biasAct(out, out, bias, g.bn*g.ho*g.wo, g.cout, dt, 0)
		}
	default:
		b.im2colConv(out, x, w, bias, dt, g)
	}
}

// planLinear picks how to run a matrix product with weights, measured and
// cross-checked like planConv (against cuBLAS GemmEx plus a bias kernel).
func (b *Backend) planLinear(m, n, k int, dt tensor.DType, bias, fusable bool) linPlan {
	d := b.d
	implicit := b.implicitOK(dt, k, n)
	switch d.opts.Linear {
	case "cublas":
		return linPlan{method: linCublas}
	case "cublaslt":
		if d.hasLt() {
			return linPlan{method: linLt}
		}
		return linPlan{method: linCublas}
	case "implicit":
		if implicit {
			return linPlan{method: linImplicit, tile: b.heuristicTile(m, n)}
		}
		return linPlan{method: linCublas}
	}
	key := linKey{dt: dt, m: m, n: n, k: k, bias: bias, fusable: fusable}
	if p, ok := d.linPick[key]; ok {
		return p
	}
	if !d.tune {
		return linPlan{method: linCublas}
	}
	if d.deferLinear(key) {
		return linPlan{method: linCublas}
	}
	cands := []linPlan{{method: linCublas}}
	if implicit {
		for _, t := range tiles {
			cands = append(cands, linPlan{method: linImplicit, tile: t})
		}
	}
	if d.hasLt() && (fusable || !bias) {
		cands = append(cands, linPlan{method: linLt})
	}
	g := convGeom{bn: 1, h: 1, w: m, c: k, ho: 1, wo: m, cout: n, kh: 1, kw: 1, stride: 1}
	sc := b.scratchConv(g, dt)
	defer sc.release()
	if !bias {
		sc.bias, sc.biasT = nil, nil
	}
	if _, err := d.timeRecords(func() { b.emitLinear(linPlan{method: linCublas}, sc.ref, sc.x, sc.w, sc.bias, nil, m, n, k, dt) }, nil); err != nil {
		d.linPick[key] = linPlan{method: linCublas}
		return linPlan{method: linCublas}
	}
	best, bestT := linPlan{method: linCublas}, math.Inf(1)
	var log []string
	for _, c := range cands {
		t, err := d.timeRecords(func() { b.emitLinear(c, sc.out, sc.x, sc.w, sc.bias, sc.biasT, m, n, k, dt) }, sc.verify(dt))
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

// scratch holds random inputs, a float32 bias and its copy in the data
// type, a reference output and an output for measuring one shape.
type scratch struct {
	x, w, bias, biasT, out, ref, diff *buffer
	n                                 int // output elements
	d                                 *Device
	classes                           []int64
	bufs                              []*buffer
}

// scratchSpec is one scratch buffer: where to put it, its elements and
// type, and the scale of its random fill (0: not filled).
type scratchSpec struct {
	dst   **buffer
	n     int
	dt    tensor.DType
	scale float32
}

// newScratch allocates the buffers of specs (plus sc.diff for verify) with
// blocks of their own and fills those with a scale with random values.
// after, if any, runs on the device thread once they are filled.
func (d *Device) newScratch(n int, specs []scratchSpec, after func(*scratch) error) *scratch {
	sc := &scratch{d: d, n: n}
	specs = append(specs, scratchSpec{&sc.diff, 2, tensor.F32, 0})
	err := d.run(func() error {
		for i, s := range specs {
			size := max(int64(s.n)*int64(s.dt.Size()), 256)
			a, c, err := d.alloc.alloc(size)
			if err != nil {
				return err
			}
			buf := &buffer{size: size, addr: a}
			*s.dst = buf
			sc.bufs = append(sc.bufs, buf)
			sc.classes = append(sc.classes, c)
			if s.scale != 0 {
				args := []karg{{a, 8}, {uint64(uint32(s.n)), 4}, {uint64(0x9e37 + 7919*i), 4}, {uint64(math.Float32bits(s.scale)), 4}}
				if err := d.eng.launch("fill_random"+suffix(s.dt), d.grid1(s.n), args); err != nil {
					return err
				}
			}
		}
		if after != nil {
			return after(sc)
		}
		return nil
	})
	if err != nil {
		sc.release()
		fail("tune", "scratch buffers: %v", err)
	}
	return sc
}

// scratchConv allocates scratch buffers for g and fills the inputs with
// random values (weights scaled by 1/√fan-in, so outputs stay near 1).
func (b *Backend) scratchConv(g convGeom, dt tensor.DType) *scratch {
	k := g.kh * g.kw * g.c
	n := g.bn * g.ho * g.wo * g.cout
	var sc0 scratch
	specs := []scratchSpec{
		{&sc0.x, g.bn * g.h * g.w * g.c, dt, 1},
		{&sc0.w, g.cout * k, dt, float32(1 / math.Sqrt(float64(max(k, 1))))},
		{&sc0.bias, g.cout, tensor.F32, 0.5},
		{&sc0.biasT, g.cout, dt, 0},
		{&sc0.out, n, dt, 0},
		{&sc0.ref, n, dt, 0},
	}
	sc := b.d.newScratch(n, specs, func(sc *scratch) error {
		d := sc.d
		if dt == tensor.F32 {
			return d.eng.memset(sc0.biasT.addr, sc0.biasT.size, 0) // unused
		}
		name := "convert_f32_" + suffix(dt)[1:]
		return d.eng.launch(name, d.grid1(g.cout), []karg{{sc0.biasT.addr, 8}, {sc0.bias.addr, 8}, {uint64(uint32(g.cout)), 4}})
	})
	sc.x, sc.w, sc.bias, sc.biasT, sc.out, sc.ref = sc0.x, sc0.w, sc0.bias, sc0.biasT, sc0.out, sc0.ref
	if dt == tensor.F32 {
		sc.biasT = sc.bias
	}
	return sc
}

func (sc *scratch) release() {
	d := sc.d
	_ = d.run(func() error {
		for i, c := range sc.classes {
			d.alloc.release(sc.bufs[i].addr, c)
		}
		sc.classes = nil
		return nil
	})
}

// verify returns a check, run on the device thread, that out agrees with
// ref within a tolerance for dt (relative to ref's largest magnitude).
func (sc *scratch) verify(dt tensor.DType) func() error {
	tol := float32(5e-3)
	switch dt {
	case tensor.BF16:
		tol = 2e-2
	case tensor.F32:
		tol = 5e-5
	}
	return func() error {
		d := sc.d
		if err := d.eng.memset(sc.diff.addr, 8, 0); err != nil {
			return err
		}
		args := []karg{{sc.diff.addr, 8}, {sc.out.addr, 8}, {sc.ref.addr, 8}, {uint64(uint32(sc.n)), 4}}
		if err := d.eng.launch("max_diff"+suffix(dt), d.grid1(sc.n), args); err != nil {
			return err
		}
		raw := make([]byte, 8)
		if err := d.eng.download(raw, sc.diff.addr); err != nil {
			return err
		}
		v := decode(raw, tensor.F32)
		if !(v[0] <= tol*v[1]+1e-6) {
			return fmt.Errorf("disagrees with the reference: max difference %.3g, max value %.3g", v[0], v[1])
		}
		return nil
	}
}

// timeRecords records build's work into a scratch segment, runs it once to
// warm up (then calls verify, if any) and then several times between
// events, and returns milliseconds per run. Buffers build creates get
// blocks of their own.
func (d *Device) timeRecords(build func(), verify func() error) (ms float64, err error) {
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
		if verify != nil {
			if err := verify(); err != nil {
				return err
			}
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

// hasLt reports whether the device can use cuBLASLt.
func (d *Device) hasLt() bool {
	ok := false
	_ = d.run(func() error { ok = d.eng.hasLt(); return nil })
	return ok
}

// biasIn returns a copy of the float32 weight bias in dt, made once and
// kept with the weight; nil when bias is not an uploaded weight.
func (d *Device) biasIn(bias *buffer, dt tensor.DType, n int) *buffer {
	if bias == nil || !bias.weight || bias.seg != nil || !bias.own {
		return nil
	}
	if dt == tensor.F32 {
		return bias
	}
	if c := bias.alt[dt]; c != nil {
		return c
	}
	c := &buffer{size: max(int64(n*dt.Size()), 256), weight: true}
	err := d.run(func() error {
		a, class, err := d.alloc.alloc(c.size)
		if err != nil {
			return err
		}
		c.addr, c.own, c.ownSize = a, true, class
		d.addWeights(c.size)
		return d.eng.launch("convert_f32_"+suffix(dt)[1:], d.grid1(n), []karg{{a, 8}, {bias.addr, 8}, {uint64(uint32(n)), 4}})
	})
	if err != nil {
		return nil
	}
	if bias.alt == nil {
		bias.alt = make(map[tensor.DType]*buffer)
	}
	bias.alt[dt] = c
	return c
}
