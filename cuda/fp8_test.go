package cuda

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda/internal/half"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// roundF16 rounds v to binary16, as uploading or FromFloat32 into an fp16
// view does.
func roundF16(v []float32) []float32 {
	out := make([]float32, len(v))
	for i, f := range v {
		out[i] = safetensors.Float16ToFloat32(safetensors.Float32ToFloat16(f))
	}
	return out
}

// q8Ref is v after per-tensor E4M3 quantisation and dequantisation, as
// the q8 kernels and cuBLASLt's scales compute it.
func q8Ref(v []float32) []float32 {
	var amax float32
	for _, f := range v {
		amax = max(amax, float32(math.Abs(float64(f))))
	}
	s := float32(1)
	if amax > 0 {
		s = amax / 448
	}
	inv := 1 / s
	out := make([]float32, len(v))
	for i, f := range v {
		out[i] = half.FromE4M3(half.ToE4M3(f*inv)) * s
	}
	return out
}

// fp8Case is an op whose matrix products run in fp8; quant lists which
// inputs the fp8 path quantises (activations and weights of products).
type fp8Case struct {
	name   string
	in     []spec
	quant  []bool
	quants int // q8_quant launches the recording must contain
	run    func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor
}

// TestFP8Products runs linear layers and a 1×1 convolution with
// Precision "fp8" (fp16 activations, outputs poisoned first) and compares
// them with the CPU backend on the same inputs quantised to E4M3 with
// per-tensor scales (relative error < 1e-2), and with the unquantised CPU
// result (the error fp8 costs, logged, bounded loosely).
func TestFP8Products(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 41))
	cases := []fp8Case{
		{"Linear bias", []spec{act(2, 64, 96), weight(80, 96).times(0.2), weight(80)}, []bool{true, true, false}, 1,
			func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Linear(x[0], x[1], x[2]) }},
		{"Linear + residual", []spec{act(2, 64, 96), weight(96, 96).times(0.2), weight(96), act(2, 64, 96)}, []bool{true, true, false, false}, 1,
			func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
				h := be.Linear(x[0], x[1], x[2])
				out := be.Add(x[3], h)
				be.Free(h)
				return out
			}},
		{"q, k, v share one quantisation", []spec{act(2, 64, 96), weight(64, 96).times(0.2), weight(64, 96).times(0.3), weight(64, 96).times(0.1)},
			[]bool{true, true, true, true}, 1,
			func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
				q, k, v := be.Linear(x[0], x[1], nil), be.Linear(x[0], x[2], nil), be.Linear(x[0], x[3], nil)
				qk := be.Add(q, k)
				out := be.Add(qk, v)
				be.Free(q, k, v, qk)
				return out
			}},
		{"Conv 1x1 bias", []spec{act(2, 96, 8, 8), weight(48, 96, 1, 1).times(0.2), weight(48)}, []bool{true, true, false}, 1,
			func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
				return be.Conv2D(x[0], x[1], x[2], backend.Conv2DParams{Stride: 1})
			}},
	}
	for _, tg := range targets(t) {
		if tg.be.ActivationDType() != tensor.F16 {
			continue
		}
		d := tg.be.Device()
		saved, savedMin := d.opts, d.fp8Min
		d.opts.Precision, d.fp8, d.fp8Min = "fp8", 0, 0
		if !d.fp8Ready() {
			if d.info.Major == 9 && d.info.Minor == 0 && d.sm90a != "" && strings.HasPrefix(d.sm90a, "loaded") {
				t.Errorf("%s: the Hopper image loaded but fp8 products are unavailable", tg.name)
			} else {
				t.Logf("%s: no fp8 products here (%s)", tg.name, d.sm90a)
			}
			d.opts, d.fp8Min, d.fp8 = saved, savedMin, 0
			continue
		}
		for _, c := range cases {
			data := make([][]float32, len(c.in))
			qdata := make([][]float32, len(c.in))
			for i, s := range c.in {
				data[i] = roundF16(randData(r, s.shape.Numel(), s.scale))
				qdata[i] = data[i]
				if c.quant[i] {
					qdata[i] = q8Ref(data[i])
				}
			}
			ref := cpu.New()
			want := ref.ToFloat32(c.run(ref, makeInputs(ref, c.in, qdata)))
			exact := ref.ToFloat32(c.run(ref, makeInputs(ref, c.in, data)))
			var got []float32
			fp8s, quants := 0, 0
			err := func() (err error) {
				defer backend.Recover(&err)
				out := c.run(tg.be, makeInputs(tg.be, c.in, data))
				for _, rec := range d.seg.recs {
					if rec.kind == recLt && rec.lt.FP8 {
						fp8s++
					}
					if rec.kind == recKernel && strings.HasPrefix(rec.kernel, "q8_quant") {
						quants++
					}
				}
				got = tg.be.ToFloat32(out)
				return nil
			}()
			if err != nil {
				t.Errorf("%s on %s: %v", c.name, tg.name, err)
				continue
			}
			if fp8s == 0 || quants != c.quants {
				t.Errorf("%s on %s: %d fp8 products and %d activation quantisations recorded, want some and %d", c.name, tg.name, fp8s, quants, c.quants)
			}
			e, e16 := fixtures.RelErr(got, want), fixtures.RelErr(got, exact)
			if e > 1e-2 || math.IsNaN(e) || e16 > 0.1 {
				t.Errorf("%s on %s: relative error %.3g against the quantised inputs (bound 1e-2), %.3g against fp16 (bound 0.1)", c.name, tg.name, e, e16)
			} else {
				t.Logf("%s on %s: relative error %.3g against the quantised inputs, %.3g against fp16", c.name, tg.name, e, e16)
			}
		}
		d.opts, d.fp8Min, d.fp8 = saved, savedMin, 0
	}
}
