package cuda

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda/internal/kernels"
)

// TestHopperKernelsExist checks that a committed Hopper image has a kernel
// for every head size and type planAttention may ask for, with the launch
// geometry within an H100/H200's shared memory.
func TestHopperKernelsExist(t *testing.T) {
	names := kernels.SM90ANames()
	if len(names) == 0 {
		t.Skip("no Hopper image committed")
	}
	for _, dp := range fhDims {
		for _, dt := range []tensor.DType{tensor.F16, tensor.BF16} {
			if n := "fh" + itoa(dp) + suffix(dt); !slices.Contains(names, n) {
				t.Errorf("%s missing from the Hopper image", n)
			}
		}
		if fhSmem(dp)+fhProbePad > 227<<10 {
			t.Errorf("head size %d: %d bytes of shared memory with the probe pad", dp, fhSmem(dp)+fhProbePad)
		}
	}
}

// TestHopperAttention runs attention with the Hopper kernels preferred
// (KILN_CUDA_ATTENTION=fh) against the CPU for every padded head size, with
// partial tiles, cross attention and causal masks, in fp16 and bf16. On a
// GPU where the Hopper image loaded, it also requires that a descriptor
// convention verified against the portable kernel and that the Hopper
// kernel is what ran; elsewhere the GPU targets are skipped.
func TestHopperAttention(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 11))
	sc := func(d int) float32 { return float32(1 / math.Sqrt(float64(d))) }
	cases := []struct {
		name          string
		bn, lq, lk, h int
		d             int
		causal        bool
	}{
		{"D=40 self", 2, 300, 300, 2, 40, false},
		{"D=40 cross 77", 2, 200, 77, 2, 40, false},
		{"D=64 causal", 1, 77, 77, 3, 64, true},
		{"D=80 self", 1, 257, 257, 2, 80, false},
		{"D=128 self", 1, 130, 190, 2, 128, false},
		{"D=160 cross", 1, 65, 20, 2, 160, false},
		{"D=160 causal", 1, 150, 150, 1, 160, true},
	}
	for _, tg := range targets(t) {
		if tg.be.dt == tensor.F32 {
			continue
		}
		d := tg.be.Device()
		if !d.hasKernel("fh48" + suffix(tg.be.dt)) {
			t.Logf("%s: no Hopper image loaded (%s)", tg.name, d.sm90a)
			continue
		}
		saved := d.opts.Attention
		d.opts.Attention = "fh"
		for _, c := range cases {
			p := backend.AttentionParams{Heads: c.h, Scale: sc(c.d), Causal: c.causal}
			f := c.h * c.d
			runCase(t, r, tg, opCase{"Hopper attention " + c.name, []spec{act(c.bn, c.lq, f), act(c.bn, c.lk, f), act(c.bn, c.lk, f)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Attention(x[0], x[1], x[2], p) }})
			if d.tune {
				cau := 0
				if c.causal {
					cau = 1
				}
				key := attnKey{dt: tg.be.dt, bn: c.bn, lq: c.lq, lk: c.lk, h: c.h, d: c.d, cau: cau, mode: "fh"}
				if pl := d.attnPick[key]; !pl.hopper {
					t.Errorf("%s %s: the Hopper kernel was not used (descriptor convention %d): %v", tg.name, c.name, d.fhLayout, d.TuneLog())
				}
			}
		}
		d.opts.Attention = saved
		t.Logf("%s: Hopper image %s, descriptor convention %d", tg.name, d.sm90a, d.fhLayout)
	}
}
