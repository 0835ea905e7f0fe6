package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// TestKernelTimings measures the device time of SD 1.5-shaped ops under each
// algorithm choice (GPU only; it checks nothing but that they run). Set
// KILN_CUDA_TIMINGS=0 to skip, KILN_TIMINGS_MATCH=TEXT to measure only the
// ops whose names contain TEXT. The table goes to the test log.
func TestKernelTimings(t *testing.T) {
	if os.Getenv("KILN_CUDA_TIMINGS") == "0" {
		t.Skip("KILN_CUDA_TIMINGS=0")
	}
	d, err := gpuDevice()
	if err != nil {
		t.Skipf("no GPU: %v", err)
	}
	saved := d.opts
	defer func() { d.opts = saved }()
	d.opts.Poison = false
	r := rand.New(rand.NewPCG(1, 2))
	var lines []string
	type variant struct {
		name string
		set  func(o *Options)
	}
	convVariants := []variant{
		{"measured choice", func(o *Options) { o.Conv, o.ConvTile = "auto", "" }},
		{"cudnn", func(o *Options) { o.Conv = "cudnn" }},
		{"cudnn+bias", func(o *Options) { o.Conv = "cudnn+bias" }},
		{"implicit 128x128", func(o *Options) { o.Conv, o.ConvTile = "implicit", "128x128" }},
		{"implicit 128x64", func(o *Options) { o.Conv, o.ConvTile = "implicit", "128x64" }},
		{"implicit 64x64", func(o *Options) { o.Conv, o.ConvTile = "implicit", "64x64" }},
		{"im2col+cublas", func(o *Options) { o.Conv = "im2col" }},
	}
	only := os.Getenv("KILN_TIMINGS_MATCH") // measure only names containing it
	measure := func(name, vname string, dt tensor.DType, flops float64, ins []spec, run func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor) {
		if !strings.Contains(name, only) {
			return
		}
		be := d.Backend(dt)
		var x []*tensor.Tensor
		for _, s := range ins {
			data := randData(r, s.shape.Numel(), s.scale)
			if s.weight {
				x = append(x, be.Upload(s.shape, tensor.F32, f32Bytes(data)))
			} else {
				x = append(x, be.FromFloat32(s.shape, data))
			}
		}
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		const reps = 10
		var outs []*tensor.Tensor
		var perr error
		// Warm up: lazy module loading and algorithm choice stay out of the numbers.
		func() {
			defer backend.Recover(&perr)
			be.Free(run(be, x))
			perr = d.Sync()
		}()
		ops, err := d.Profile(func() error {
			defer backend.Recover(&perr)
			for i := 0; i < reps; i++ {
				outs = append(outs, run(be, x))
			}
			return d.Sync()
		})
		be.Free(outs...)
		be.Free(x...)
		if err == nil {
			err = perr
		}
		if err != nil {
			lines = append(lines, fmt.Sprintf("%-44s %-18s error: %v", name, vname, err))
			return
		}
		var total time.Duration
		var parts []string
		for _, o := range ops {
			if o.Name == "upload" {
				continue
			}
			total += o.Time
			parts = append(parts, fmt.Sprintf("%s %.0fµs", o.Name, float64(o.Time)/1e3/reps))
		}
		us := float64(total) / 1e3 / reps
		rate := ""
		if flops > 0 {
			rate = fmt.Sprintf("%7.1f TFLOP/s", flops/(us*1e-6)/1e12)
		}
		lines = append(lines, fmt.Sprintf("%-44s %-18s %9.1f µs %s   [%s]", name, vname, us, rate, strings.Join(parts, ", ")))
	}
	conv := func(b, c, cout, hw int, dt tensor.DType) {
		name := fmt.Sprintf("conv3x3 %d→%d %dx%d b%d %s", c, cout, hw, hw, b, dt)
		flops := 2 * float64(b*hw*hw) * float64(cout) * float64(9*c)
		for _, v := range convVariants {
			v.set(&d.opts)
			measure(name, v.name, dt, flops, []spec{act(b, c, hw, hw), weight(cout, c, 3, 3).times(0.05), weight(cout)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
					return be.Conv2D(x[0], x[1], x[2], backend.SymmetricPad(1, 1))
				})
		}
		d.opts = saved
		d.opts.Poison = false
	}
	conv(2, 320, 320, 64, tensor.F16)
	conv(2, 640, 640, 32, tensor.F16)
	conv(2, 1280, 1280, 16, tensor.F16)
	conv(2, 1280, 1280, 8, tensor.F16)
	conv(2, 2560, 1280, 16, tensor.F16)
	conv(16, 320, 320, 64, tensor.F16)
	conv(16, 1280, 1280, 16, tensor.F16)
	conv(1, 128, 128, 512, tensor.BF16)
	conv(1, 256, 256, 256, tensor.BF16)
	conv(1, 512, 512, 128, tensor.BF16)

	linear := func(m, k, n int) {
		name := fmt.Sprintf("linear %dx%d→%d", m, k, n)
		for _, v := range []string{"auto", "cublas", "cublaslt", "implicit"} {
			d.opts.Linear = v
			measure(name, v, tensor.F16, 2*float64(m)*float64(k)*float64(n), []spec{act(m, k), weight(n, k).times(0.05), weight(n)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Linear(x[0], x[1], x[2]) })
		}
		d.opts.Linear = saved.Linear
	}
	linear(8192, 320, 320)
	linear(8192, 320, 2560)
	linear(8192, 1280, 320)
	linear(2048, 640, 5120)
	linear(65536, 320, 320)

	attn := func(b, lq, lk, heads, dh int) {
		name := fmt.Sprintf("attention b%d %dx%d h%d d%d", b, lq, lk, heads, dh)
		flops := 4 * float64(b*heads) * float64(lq) * float64(lk) * float64(dh)
		for _, v := range []string{"auto", "fh", "flashp", "flash1", "gemm"} {
			d.opts.Attention = v
			f := heads * dh
			measure(name, v, tensor.F16, flops, []spec{act(b, lq, f), act(b, lk, f), act(b, lk, f)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
					return be.Attention(x[0], x[1], x[2], backend.AttentionParams{Heads: heads, Scale: float32(1 / math.Sqrt(float64(dh)))})
				})
		}
		d.opts.Attention = saved.Attention
	}
	attn(2, 4096, 4096, 8, 40)
	attn(2, 4096, 77, 8, 40)
	attn(2, 1024, 1024, 8, 80)
	attn(2, 256, 256, 8, 160)
	attn(16, 4096, 4096, 8, 40)
	attn(1, 4096, 4096, 1, 512)

	gn := func(name string, dt tensor.DType, sp spec, groups int) {
		c := sp.shape[1]
		for _, v := range []string{"auto", "3pass"} {
			d.opts.GroupNorm = v
			measure(name, v, dt, 0, []spec{sp, weight(c), weight(c)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
					return be.GroupNorm(x[0], x[1], x[2], groups, 1e-5, true)
				})
		}
		d.opts.GroupNorm = saved.GroupNorm
	}
	gn("groupnorm+silu 320 64x64 b2", tensor.F16, act(2, 320, 64, 64), 32)
	gn("groupnorm+silu 320 64x64 b32", tensor.F16, act(32, 320, 64, 64), 32)
	gn("groupnorm+silu 640 64x64 b32", tensor.F16, act(32, 640, 64, 64), 32)
	gn("groupnorm+silu 1280 16x16 b32", tensor.F16, act(32, 1280, 16, 16), 32)
	gn("groupnorm+silu 1280 8x8 b2", tensor.F16, act(2, 1280, 8, 8), 32)
	gn("groupnorm+silu 128 512x512 b1 bf16", tensor.BF16, act(1, 128, 512, 512), 32)
	measure("layernorm 8192x320", "", tensor.F16, 0, []spec{act(2, 4096, 320), weight(320), weight(320)},
		func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
			return be.LayerNorm(x[0], x[1], x[2], 1e-5)
		})
	measure("geglu 8192x2560", "", tensor.F16, 0, []spec{act(2, 4096, 2560)},
		func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.GEGLU(x[0]) })
	measure("add 8192x320", "", tensor.F16, 0, []spec{act(2, 4096, 320), act(2, 4096, 320)},
		func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Add(x[0], x[1]) })
	measure("concat 640+640 32x32 b2", "", tensor.F16, 0, []spec{act(2, 640, 32, 32), act(2, 640, 32, 32)},
		func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.ConcatChannels(x[0], x[1]) })
	measure("upsample 1280 16x16 b2", "", tensor.F16, 0, []spec{act(2, 1280, 16, 16)},
		func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.UpsampleNearest2x(x[0]) })
	lines = append(lines, "", "algorithm choices measured on first use:")
	lines = append(lines, d.TuneLog()...)
	t.Log("kernel timings (device time per call):\n" + strings.Join(lines, "\n"))
	if p := os.Getenv("KILN_TIMINGS_OUT"); p != "" {
		_ = os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	}
}
