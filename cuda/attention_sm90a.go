package cuda

import (
	"fmt"
	"math"

	"github.com/kiln-project/kiln/core/tensor"
)

// The Hopper attention (kernels/sm90a: fh48 … fh160) runs the products on
// wgmma. It exists only where the Hopper image loaded (sm_90 with a driver
// that accepts it); on first use of a shape the tuner times it against the
// portable kernel, checks that the two agree, and keeps the faster.

// fhDims are the padded head sizes the Hopper kernels exist for.
var fhDims = [...]int{48, 64, 80, 128, 160}

func fhDim(d int) int {
	for _, p := range fhDims {
		if d <= p {
			return p
		}
	}
	return 0
}

// fhBC is the keys per tile of the Hopper kernel for padded head size dp
// (as FH_EXPORT in kernels/sm90a/attention.cu).
func fhBC(dp int) int {
	if dp <= 80 {
		return 128
	}
	return 64
}

// fhSmem is the Hopper kernel's shared memory: 128 query rows and two
// stages of K and V tiles.
func fhSmem(dp int) int { return (128*dp + 4*fhBC(dp)*dp) * 2 }

// fhProbePad is extra shared memory given to launches that try a
// descriptor convention not yet verified: a wrong convention reads past
// the tiles, and must stay inside the block's allocation.
const fhProbePad = 64 << 10

// fhBroken marks a device where no descriptor convention verified.
const fhBroken = -2

// fhLayouts are the descriptor conventions tried, most likely first (bit 0
// swaps the strides of the K-major descriptors, bit 1 of the MN-major one).
var fhLayouts = [...]int{0, 1, 2, 3}

type attnKey struct {
	dt                    tensor.DType
	bn, lq, lk, h, d, cau int
	mode                  string // Options.Attention
}

type attnPlan struct {
	hopper bool
	layout int
}

func (p attnPlan) String() string {
	if p.hopper {
		return fmt.Sprintf("hopper layout %d", p.layout)
	}
	return "flash"
}

// hopperAttention launches the Hopper kernel for g with descriptor
// convention layout and pad extra bytes of shared memory.
func (b *Backend) hopperAttention(out, qb, kb, vb *buffer, g attnGeom, layout, pad int) {
	dp, f := fhDim(g.d), g.h*g.d
	cfg := launchCfg{grid: [3]uint32{uint32((g.lq + 127) / 128), uint32(g.h), uint32(g.bn)}, block: [3]uint32{256, 1, 1}, shmem: uint32(fhSmem(dp) + pad)}
	b.d.launch("fh"+itoa(dp)+suffix(g.dt), cfg, out, pbuf(out), pbuf(qb), pbuf(kb), pbuf(vb),
		i32(g.lq), i32(g.lk), i32(g.d), i32(f), i32(f), i32(f), i32(f), f32(g.scale*float32(math.Log2E)), i32(g.causal), i32(layout))
}

// planAttention decides between the portable and the Hopper kernel for g.
// KILN_CUDA_ATTENTION=fh prefers the Hopper kernel wherever it verifies;
// flash, flashp, flash1 and gemm never use it.
func (b *Backend) planAttention(g attnGeom) attnPlan {
	d := b.d
	dp := fhDim(g.d)
	mode := d.opts.Attention
	if dp == 0 || (mode != "auto" && mode != "fh") || d.fhLayout == fhBroken || fhSmem(dp) > d.info.MaxSharedOpt {
		return attnPlan{}
	}
	key := attnKey{dt: g.dt, bn: g.bn, lq: g.lq, lk: g.lk, h: g.h, d: g.d, cau: g.causal, mode: mode}
	if p, ok := d.attnPick[key]; ok {
		return p
	}
	if !d.hasKernel("fh" + itoa(dp) + suffix(g.dt)) {
		d.attnPick[key] = attnPlan{}
		return attnPlan{}
	}
	forced := mode == "fh"
	if !d.tune { // nothing to measure with (the emulated device)
		if forced {
			return attnPlan{hopper: true, layout: max(d.fhLayout, 0)}
		}
		return attnPlan{}
	}
	f := g.h * g.d
	nq, nk := g.bn*g.lq*f, g.bn*g.lk*f
	var q, k, v, out, ref *buffer
	sc := d.newScratch(nq, []scratchSpec{{&q, nq, g.dt, 1}, {&k, nk, g.dt, 1}, {&v, nk, g.dt, 1}, {&out, nq, g.dt, 0}, {&ref, nq, g.dt, 0}}, nil)
	sc.out, sc.ref = out, ref
	defer sc.release()
	tRef, err := d.timeRecords(func() { b.flashAttention(ref, q, k, v, g) }, nil)
	if err != nil {
		d.attnPick[key] = attnPlan{}
		return attnPlan{}
	}
	best, bestT := attnPlan{}, tRef
	if forced {
		bestT = math.Inf(1)
	}
	log := []string{fmt.Sprintf("flash %.1fµs", tRef*1e3)}
	layouts := fhLayouts[:]
	if d.fhLayout >= 0 {
		layouts = []int{d.fhLayout}
	}
	for _, l := range layouts {
		pad := 0
		if d.fhLayout < 0 {
			pad = min(fhProbePad, d.info.MaxSharedOpt-fhSmem(dp))
		}
		t, err := d.timeRecords(func() { b.hopperAttention(out, q, k, v, g, l, pad) }, sc.verify(g.dt))
		if err != nil {
			log = append(log, fmt.Sprintf("hopper layout %d: %v", l, err))
			continue
		}
		if pad > 0 { // time it again as it will run
			if t2, err := d.timeRecords(func() { b.hopperAttention(out, q, k, v, g, l, 0) }, nil); err == nil {
				t = t2
			}
		}
		d.fhLayout = l
		log = append(log, fmt.Sprintf("hopper layout %d %.1fµs", l, t*1e3))
		if t < bestT {
			best, bestT = attnPlan{hopper: true, layout: l}, t
		}
		break
	}
	if d.fhLayout < 0 {
		d.fhLayout = fhBroken
	}
	d.attnPick[key] = best
	d.tuneLog = append(d.tuneLog, fmt.Sprintf("attention %s b%d %dx%d h%d d%d causal %d: %s ← %v", g.dt, g.bn, g.lq, g.lk, g.h, g.d, g.causal, best, log))
	return best
}

// hasKernel reports whether the device can launch the named kernel.
func (d *Device) hasKernel(name string) bool {
	ok := false
	_ = d.run(func() error { ok = d.eng.hasKernel(name); return nil })
	return ok
}
