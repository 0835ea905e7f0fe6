package cuda

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// target is a CUDA backend view under test with its error bound against
// the CPU reference.
type target struct {
	name string
	be   *Backend
	tol  float64
}

var (
	gpuOnce sync.Once
	gpuDev  *Device
	gpuErr  error
)

// gpuDevice opens cuda:0 once for the test binary (with poisoned memory).
func gpuDevice() (*Device, error) {
	gpuOnce.Do(func() {
		o := DefaultOptions()
		o.Poison = true
		gpuDev, gpuErr = Open(0, o)
	})
	return gpuDev, gpuErr
}

func tolFor(dt tensor.DType) float64 {
	switch dt {
	case tensor.F16:
		return 1e-2
	case tensor.BF16:
		return 3e-2
	}
	return 1e-4
}

// targets returns the fake device in three precisions and, where a GPU is
// present, the real one too. KILN_CUDA_FAKE=0 skips the fake.
func targets(t *testing.T) []target {
	t.Helper()
	var out []target
	if os.Getenv("KILN_CUDA_FAKE") != "0" {
		o := DefaultOptions()
		o.Poison = true
		d, _ := newFakeDevice(o)
		for _, dt := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16} {
			out = append(out, target{"fake/" + dt.String(), d.Backend(dt), tolFor(dt)})
		}
	}
	if d, err := gpuDevice(); err == nil {
		for _, dt := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16} {
			out = append(out, target{"gpu/" + dt.String(), d.Backend(dt), tolFor(dt)})
		}
	} else {
		t.Logf("GPU targets skipped: %v", err)
	}
	return out
}

func seed(t *testing.T) uint64 {
	s := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", s)
	return s
}

// spec is one input of an op case: an activation (FromFloat32) or a weight
// (Upload of float32 bytes), with values uniform in ±scale (never zero).
type spec struct {
	shape  tensor.Shape
	weight bool
	scale  float64
}

func act(s ...int) spec             { return spec{shape: s, scale: 1} }
func weight(s ...int) spec          { return spec{shape: s, weight: true, scale: 1} }
func (s spec) times(f float64) spec { s.scale = f; return s }

func randData(r *rand.Rand, n int, scale float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		v := (r.Float64()*2 - 1) * scale
		if v == 0 {
			v = scale / 7
		}
		out[i] = float32(v)
	}
	return out
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

func makeInputs(be backend.Backend, specs []spec, data [][]float32) []*tensor.Tensor {
	ts := make([]*tensor.Tensor, len(specs))
	for i, s := range specs {
		if s.weight {
			ts[i] = be.Upload(s.shape, tensor.F32, f32Bytes(data[i]))
		} else {
			ts[i] = be.FromFloat32(s.shape, data[i])
		}
	}
	return ts
}

type opCase struct {
	name string
	in   []spec
	run  func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor
}

// runCase computes c on the CPU and on tg and compares.
func runCase(t *testing.T, r *rand.Rand, tg target, c opCase) {
	t.Helper()
	data := make([][]float32, len(c.in))
	for i, s := range c.in {
		data[i] = randData(r, s.shape.Numel(), s.scale)
	}
	ref := cpu.New()
	want := ref.ToFloat32(c.run(ref, makeInputs(ref, c.in, data)))
	var got []float32
	err := func() (err error) {
		defer backend.Recover(&err)
		got = tg.be.ToFloat32(c.run(tg.be, makeInputs(tg.be, c.in, data)))
		return nil
	}()
	if err != nil {
		t.Errorf("%s on %s: %v", c.name, tg.name, err)
		return
	}
	e := fixtures.RelErr(got, want)
	if e > tg.tol || math.IsNaN(e) {
		t.Errorf("%s on %s: relative error %.3g > %.3g", c.name, tg.name, e, tg.tol)
	} else {
		t.Logf("%s on %s: relative error %.3g", c.name, tg.name, e)
	}
}

func opCases() []opCase {
	conv := func(p backend.Conv2DParams) func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
		return func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Conv2D(x[0], x[1], x[2], p) }
	}
	attn := func(p backend.AttentionParams) func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
		return func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Attention(x[0], x[1], x[2], p) }
	}
	sc := func(d int) float32 { return float32(1 / math.Sqrt(float64(d))) }
	return []opCase{
		{"Linear 3-D with bias", []spec{act(2, 5, 64), weight(48, 64), weight(48)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Linear(x[0], x[1], x[2]) }},
		{"Linear odd sizes no bias", []spec{act(3, 7), weight(5, 7)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Linear(x[0], x[1], nil) }},
		{"Conv2D 3x3 implicit", []spec{act(2, 32, 9, 7), weight(64, 32, 3, 3).times(0.2), weight(64)}, conv(backend.SymmetricPad(1, 1))},
		{"Conv2D 3x3 wide", []spec{act(1, 64, 12, 12), weight(192, 64, 3, 3).times(0.1), weight(192)}, conv(backend.SymmetricPad(1, 1))},
		{"Conv2D 3x3 small Cin (im2col)", []spec{act(2, 4, 8, 8), weight(8, 4, 3, 3), weight(8)}, conv(backend.SymmetricPad(1, 1))},
		{"Conv2D stride 2 asymmetric pad", []spec{act(1, 32, 8, 10), weight(32, 32, 3, 3).times(0.2), weight(32)}, conv(backend.Conv2DParams{Stride: 2, PadBottom: 1, PadRight: 1})},
		{"Conv2D stride 2 pad 1", []spec{act(2, 3, 9, 9), weight(6, 3, 3, 3), nil0()}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
			return be.Conv2D(x[0], x[1], nil, backend.SymmetricPad(2, 1))
		}},
		{"Conv2D 1x1", []spec{act(2, 24, 5, 6), weight(16, 24, 1, 1), weight(16)}, conv(backend.SymmetricPad(1, 0))},
		{"LayerNorm", []spec{act(2, 7, 48).times(3), weight(48), weight(48)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
			return be.LayerNorm(x[0], x[1], x[2], 1e-5)
		}},
		{"LayerNorm no affine", []spec{act(3, 300)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.LayerNorm(x[0], nil, nil, 1e-5) }},
		{"GroupNorm SiLU", []spec{act(2, 64, 8, 8).times(2), weight(64), weight(64)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
			return be.GroupNorm(be.Scale(x[0], 1), x[1], x[2], 32, 1e-6, true)
		}},
		{"GroupNorm odd", []spec{act(1, 40, 5, 3), weight(40), weight(40)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
			return be.GroupNorm(x[0], x[1], x[2], 8, 1e-5, false)
		}},
		{"GroupNorm many groups per block", []spec{act(64, 64, 4, 4), weight(64), weight(64)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
			return be.GroupNorm(x[0], x[1], x[2], 32, 1e-5, true)
		}},
		{"GroupNorm three passes", []spec{act(1, 32, 128, 128).times(3), weight(32), weight(32)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
			return be.GroupNorm(be.Scale(x[0], 1), x[1], x[2], 2, 1e-5, true)
		}},
		{"GroupNorm 3-D", []spec{act(2, 16, 10)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
			return be.GroupNorm(x[0], nil, nil, 4, 1e-5, false)
		}},
		{"Attention D=8", []spec{act(2, 40, 32), act(2, 40, 32), act(2, 40, 32)}, attn(backend.AttentionParams{Heads: 4, Scale: sc(8)})},
		{"Attention D=40 cross", []spec{act(2, 70, 320), act(2, 77, 320), act(2, 77, 320)}, attn(backend.AttentionParams{Heads: 8, Scale: sc(40)})},
		{"Attention D=64 causal", []spec{act(1, 77, 256), act(1, 77, 256), act(1, 77, 256)}, attn(backend.AttentionParams{Heads: 4, Scale: sc(64), Causal: true})},
		{"Attention D=64 causal long", []spec{act(1, 200, 128), act(1, 200, 128), act(1, 200, 128)}, attn(backend.AttentionParams{Heads: 2, Scale: sc(64), Causal: true})},
		{"Attention D=48 causal 600", []spec{act(1, 600, 96), act(1, 600, 96), act(1, 600, 96)}, attn(backend.AttentionParams{Heads: 2, Scale: sc(48), Causal: true})},
		{"Attention D=160", []spec{act(1, 65, 320), act(1, 20, 320), act(1, 20, 320)}, attn(backend.AttentionParams{Heads: 2, Scale: sc(160)})},
		{"Attention D=4 (unfused)", []spec{act(2, 9, 8), act(2, 11, 8), act(2, 11, 8)}, attn(backend.AttentionParams{Heads: 2, Scale: sc(4), Upcast: true})},
		{"Attention one head D=512 (unfused)", []spec{act(1, 33, 512), act(1, 33, 512), act(1, 33, 512)}, attn(backend.AttentionParams{Heads: 1, Scale: sc(512)})},
		{"Embedding", []spec{weight(50, 24)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
			return be.Embedding(x[0], []int32{3, 0, 49, 7, 7, 12}, tensor.Shape{2, 3})
		}},
		{"GatherRows", []spec{act(3, 9, 16)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
			return be.GatherRows(x[0], []int{8, 0, 4})
		}},
		{"Add images", []spec{act(2, 8, 4, 4), act(2, 8, 4, 4)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Add(x[0], x[1]) }},
		{"Add odd", []spec{act(3, 5), act(3, 5)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Add(x[0], x[1]) }},
		{"AddBroadcast (B,C) on image", []spec{act(2, 24, 3, 5), act(2, 24)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.AddBroadcast(x[0], x[1]) }},
		{"AddBroadcast suffix", []spec{act(2, 7, 12), act(7, 12)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.AddBroadcast(x[0], x[1]) }},
		{"AddBroadcast f32 bias suffix", []spec{act(2, 7, 12), weight(12)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.AddBroadcast(x[0], x[1]) }},
		{"AddBroadcast prefix 3-D", []spec{act(2, 7, 12), act(2, 7)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.AddBroadcast(x[0], x[1]) }},
		{"AddBroadcast suffix on image", []spec{act(2, 3, 4, 5), act(4, 5)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.AddBroadcast(x[0], x[1]) }},
		{"Scale", []spec{act(5, 33)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Scale(x[0], -1.75) }},
		{"SiLU", []spec{act(4, 40).times(4)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.SiLU(x[0]) }},
		{"GELU", []spec{act(4, 41).times(4)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.GELU(x[0]) }},
		{"QuickGELU", []spec{act(4, 40).times(4)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.QuickGELU(x[0]) }},
		{"GEGLU", []spec{act(2, 5, 64).times(3)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.GEGLU(x[0]) }},
		{"GEGLU odd", []spec{act(3, 10).times(3)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.GEGLU(x[0]) }},
		{"ConcatChannels", []spec{act(2, 16, 3, 4), act(2, 8, 3, 4)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.ConcatChannels(x[0], x[1]) }},
		{"ConcatChannels odd", []spec{act(1, 3, 2, 5), act(1, 5, 2, 5)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.ConcatChannels(x[0], x[1]) }},
		{"UpsampleNearest2x", []spec{act(2, 16, 3, 5)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.UpsampleNearest2x(x[0]) }},
		{"UpsampleNearest2x odd", []spec{act(1, 3, 2, 2)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.UpsampleNearest2x(x[0]) }},
		{"ImageToTokens", []spec{act(2, 6, 3, 4)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.ImageToTokens(x[0]) }},
		{"TokensToImage", []spec{act(2, 12, 6)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.TokensToImage(x[0], 3, 4) }},
		{"Reshape image", []spec{act(2, 6, 3, 4)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
			return be.Reshape(x[0], tensor.Shape{12, 12})
		}},
		{"Reshape tokens to 4-D then conv", []spec{act(1, 12, 32), weight(8, 32, 3, 3), weight(8)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
			return be.Conv2D(be.Reshape(x[0], tensor.Shape{1, 32, 3, 4}), x[1], x[2], backend.SymmetricPad(1, 1))
		}},
	}
}

func nil0() spec { return spec{shape: tensor.Shape{1}, scale: 1} }

// TestOpsMatchCPU runs every op on random inputs on each target and
// compares with the CPU backend.
func TestOpsMatchCPU(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 7))
	for _, tg := range targets(t) {
		for _, c := range opCases() {
			runCase(t, r, tg, c)
		}
	}
}

// chain mixes layouts, views, frees and every kind of op, as a UNet block does.
func chain(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
	img, w1, b1, gw, gb, wq, wk, wv, ctx, temb, w2 := x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], x[9], x[10]
	h := be.GroupNorm(img, gw, gb, 8, 1e-6, true)
	h2 := be.Conv2D(h, w1, b1, backend.SymmetricPad(1, 1))
	be.Free(h)
	h3 := be.AddBroadcast(h2, temb)
	be.Free(h2)
	tok := be.ImageToTokens(h3)
	q := be.Linear(tok, wq, nil)
	k := be.Linear(ctx, wk, nil)
	v := be.Linear(ctx, wv, nil)
	a := be.Attention(q, k, v, backend.AttentionParams{Heads: 2, Scale: 0.25})
	be.Free(q, k, v)
	s := be.Add(tok, a)
	be.Free(tok, a)
	im := be.TokensToImage(s, 4, 6)
	be.Free(s)
	up := be.UpsampleNearest2x(im)
	cat := be.ConcatChannels(up, be.UpsampleNearest2x(h3))
	be.Free(up, im, h3)
	out := be.Conv2D(cat, w2, nil, backend.SymmetricPad(2, 1))
	be.Free(cat)
	return be.SiLU(out)
}

func chainSpecs() []spec {
	return []spec{act(2, 32, 4, 6), weight(32, 32, 3, 3).times(0.2), weight(32), weight(32), weight(32),
		weight(32, 32).times(0.3), weight(32, 16).times(0.3), weight(32, 16).times(0.3), act(2, 5, 16), act(2, 32), weight(16, 64, 3, 3).times(0.1)}
}

// TestChainAndGraphs runs a block-like chain several times: the second run
// is captured as a graph, later runs replay it, and every result must match
// the CPU for its own random inputs.
func TestChainAndGraphs(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 9))
	specs := chainSpecs()
	for _, tg := range targets(t) {
		d := tg.be.Device()
		before := d.Stats()
		var weights [][]float32
		for run := 0; run < 4; run++ {
			data := make([][]float32, len(specs))
			for i, s := range specs {
				data[i] = randData(r, s.shape.Numel(), s.scale)
				if run > 0 && s.weight {
					data[i] = weights[i]
				}
			}
			weights = data
			ref := cpu.New()
			want := ref.ToFloat32(chain(ref, makeInputs(ref, specs, data)))
			ins := makeInputs(tg.be, specs, data)
			var got []float32
			err := func() (err error) {
				defer backend.Recover(&err)
				got = tg.be.ToFloat32(chain(tg.be, ins))
				return nil
			}()
			if err != nil {
				t.Fatalf("%s run %d: %v", tg.name, run, err)
			}
			if e := fixtures.RelErr(got, want); e > tg.tol || math.IsNaN(e) {
				t.Errorf("%s run %d: relative error %.3g", tg.name, run, e)
			}
			tg.be.Free(ins...)
		}
		st := d.Stats()
		if d.opts.Graphs && st.Replayed-before.Replayed < 1 {
			t.Logf("%s: %+v", tg.name, st)
		}
	}
}

// TestGraphReplay checks that identical segments are captured once and then
// replayed with fresh uploaded inputs.
func TestGraphReplay(t *testing.T) {
	o := DefaultOptions()
	o.Graphs = true
	o.Poison = true
	d, _ := newFakeDevice(o)
	be := d.Backend(tensor.F16)
	ref := cpu.New()
	r := rand.New(rand.NewPCG(seed(t), 3))
	specs := chainSpecs()
	data := make([][]float32, len(specs))
	for i, s := range specs {
		data[i] = randData(r, s.shape.Numel(), s.scale)
	}
	wts := make([]*tensor.Tensor, len(specs)) // weights stay; activations re-made each run
	for i, s := range specs {
		if s.weight {
			wts[i] = be.Upload(s.shape, tensor.F32, f32Bytes(data[i]))
		}
	}
	for run := 0; run < 5; run++ {
		for i, s := range specs {
			if !s.weight {
				data[i] = randData(r, s.shape.Numel(), s.scale)
				wts[i] = be.FromFloat32(s.shape, data[i])
			}
		}
		want := ref.ToFloat32(chain(ref, makeInputs(ref, specs, data)))
		got := be.ToFloat32(chain(be, wts))
		for i, s := range specs {
			if !s.weight {
				be.Free(wts[i])
			}
		}
		if e := fixtures.RelErr(got, want); e > 1e-2 {
			t.Fatalf("run %d: relative error %.3g", run, e)
		}
	}
	st := d.Stats()
	if st.Captured != 1 || st.Replayed != 3 || st.Transient != 1 {
		t.Fatalf("want 1 transient run, 1 capture, 3 replays: %+v", st)
	}
}

// TestGraphInvalidatesOldOutputs checks that a tensor made by a graph step
// fails clearly once the graph has run again.
func TestGraphInvalidatesOldOutputs(t *testing.T) {
	d, _ := newFakeDevice(DefaultOptions())
	be := d.Backend(tensor.F32)
	w := be.Upload(tensor.Shape{4, 4}, tensor.F32, f32Bytes(make([]float32, 16)))
	var kept []*tensor.Tensor
	for i := 0; i < 3; i++ {
		x := be.FromFloat32(tensor.Shape{2, 4}, []float32{1, 2, 3, 4, 5, 6, 7, 8})
		y := be.Linear(x, w, nil)
		be.Free(x)
		be.ToFloat32(y)
		kept = append(kept, y)
	}
	var err error
	func() {
		defer backend.Recover(&err)
		be.SiLU(kept[1])
	}()
	if err == nil {
		t.Fatalf("using an output of an earlier replay should fail; stats %+v", d.Stats())
	}
	err = nil
	func() {
		defer backend.Recover(&err)
		be.ToFloat32(be.SiLU(kept[2]))
	}()
	if err != nil {
		t.Fatalf("the latest output must stay usable: %v", err)
	}
}

// TestErrors checks bad inputs give errors, not crashes.
func TestErrors(t *testing.T) {
	d, _ := newFakeDevice(DefaultOptions())
	be := d.Backend(tensor.F16)
	other, _ := newFakeDevice(DefaultOptions())
	x := be.FromFloat32(tensor.Shape{2, 3}, []float32{1, 2, 3, 4, 5, 6})
	cases := map[string]func(){
		"freed":   func() { y := be.Scale(x, 2); be.Free(y); be.SiLU(y) },
		"foreign": func() { be.SiLU(other.Backend(tensor.F16).FromFloat32(tensor.Shape{1}, []float32{1})) },
		"shape":   func() { be.Add(x, be.FromFloat32(tensor.Shape{3, 2}, make([]float32, 6))) },
		"upload":  func() { be.Upload(tensor.Shape{3}, tensor.F32, make([]byte, 5)) },
		"from":    func() { be.FromFloat32(tensor.Shape{4}, []float32{1}) },
		"embedding": func() {
			be.Embedding(be.Upload(tensor.Shape{2, 2}, tensor.F32, make([]byte, 16)), []int32{2}, tensor.Shape{1})
		},
		"attention": func() { be.Attention(x, x, x, backend.AttentionParams{Heads: 2}) },
		"conv":      func() { be.Conv2D(x, x, nil, backend.SymmetricPad(1, 0)) },
		"groupnorm": func() {
			be.GroupNorm(be.FromFloat32(tensor.Shape{1, 3, 1, 1}, []float32{1, 2, 3}), nil, nil, 2, 1e-5, false)
		},
		"broadcast":  func() { be.AddBroadcast(x, be.FromFloat32(tensor.Shape{5}, make([]float32, 5))) },
		"nil tensor": func() { be.SiLU(nil) },
	}
	for name, f := range cases {
		var err error
		func() {
			defer backend.Recover(&err)
			f()
		}()
		var be *backend.Error
		if !errors.As(err, &be) {
			t.Errorf("%s: want a backend error, got %v", name, err)
		}
	}
}

// TestOutOfMemory checks that running out of device memory fails the work
// with ErrOutOfMemory and leaves the device usable.
func TestOutOfMemory(t *testing.T) {
	d, e := newFakeDevice(DefaultOptions())
	e.freeLimit = 1 << 20
	be := d.Backend(tensor.F32)
	var err error
	func() {
		defer backend.Recover(&err)
		x := be.FromFloat32(tensor.Shape{1 << 19}, make([]float32, 1<<19))
		be.ToFloat32(be.Scale(x, 2))
	}()
	if !errors.Is(err, backend.ErrOutOfMemory) {
		t.Fatalf("want out of memory, got %v", err)
	}
	err = nil
	func() {
		defer backend.Recover(&err)
		x := be.FromFloat32(tensor.Shape{4}, []float32{1, 2, 3, 4})
		got := be.ToFloat32(be.Scale(x, 2))
		if got[3] != 8 {
			t.Errorf("after OOM: %v", got)
		}
	}()
	if err != nil {
		t.Fatalf("device unusable after OOM: %v", err)
	}
}

// TestMemoryIsReused checks that steady-state work allocates nothing new and
// that freed activations shrink the peak.
func TestMemoryIsReused(t *testing.T) {
	o := DefaultOptions()
	o.Graphs = false
	d, e := newFakeDevice(o)
	be := d.Backend(tensor.F16)
	w := be.Upload(tensor.Shape{64, 64}, tensor.F32, f32Bytes(randData(rand.New(rand.NewPCG(1, 1)), 4096, 0.1)))
	step := func() {
		x := be.FromFloat32(tensor.Shape{16, 64}, make([]float32, 1024))
		for i := 0; i < 20; i++ {
			x = swapT(be, x, be.Linear(x, w, nil))
		}
		be.ToFloat32(x)
		be.Free(x)
	}
	step()
	step()
	n := e.allocs
	for i := 0; i < 5; i++ {
		step()
	}
	if e.allocs != n {
		t.Fatalf("steady state allocated %d new blocks", e.allocs-n)
	}
	// 20 chained products of 2 KiB each: the plan must overlap them.
	if st := d.Stats(); st.Peak > st.Weights+64<<10 {
		t.Fatalf("peak %d bytes for a chain that needs a few KiB", st.Peak)
	}
}

func swapT(be backend.Backend, old, next *tensor.Tensor) *tensor.Tensor {
	be.Free(old)
	return next
}

func TestPlanArenaNoOverlap(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for trial := 0; trial < 50; trial++ {
		n := 1 + r.IntN(60)
		sizes := make([]int64, n)
		first := make([]int, n)
		last := make([]int, n)
		inc := make([]bool, n)
		for i := range sizes {
			sizes[i] = int64(256 * (1 + r.IntN(20)))
			first[i] = r.IntN(40) - 1
			last[i] = first[i] + r.IntN(10)
			inc[i] = r.IntN(5) > 0
		}
		offs, total := planArena(sizes, first, last, inc)
		for i := 0; i < n; i++ {
			if !inc[i] {
				continue
			}
			if offs[i]+sizes[i] > total {
				t.Fatal("beyond arena")
			}
			for j := i + 1; j < n; j++ {
				if inc[j] && first[i] <= last[j] && first[j] <= last[i] && offs[i] < offs[j]+sizes[j] && offs[j] < offs[i]+sizes[i] {
					t.Fatalf("buffers %d and %d overlap in time and space", i, j)
				}
			}
		}
	}
}

// TestKernelVariants runs every implicit-GEMM tile, the implicit kernel as a
// linear layer, and every fused-attention head size, on shapes with partial
// tiles, against the CPU.
func TestKernelVariants(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 11))
	var tgs []target
	for _, tg := range targets(t) {
		if tg.be.ActivationDType() != tensor.F32 {
			tgs = append(tgs, tg)
		}
	}
	for _, tile := range []string{"128x128", "128x64", "64x64"} {
		for _, tg := range tgs {
			d := tg.be.Device()
			saved := d.opts
			d.opts.ConvTile = tile
			d.opts.Linear = "implicit"
			v := target{tg.name + "/" + tile, tg.be, tg.tol}
			runCase(t, r, v, opCase{"Conv2D 3x3 tile " + tile, []spec{act(2, 64, 13, 11), weight(136, 64, 3, 3).times(0.1), weight(136)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
					return be.Conv2D(x[0], x[1], x[2], backend.SymmetricPad(1, 1))
				}})
			runCase(t, r, v, opCase{"Conv2D stride 2 tile " + tile, []spec{act(1, 96, 17, 16), weight(64, 96, 3, 3).times(0.1), weight(64)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
					return be.Conv2D(x[0], x[1], x[2], backend.Conv2DParams{Stride: 2, PadBottom: 1, PadRight: 1})
				}})
			runCase(t, r, v, opCase{"Linear via implicit kernel " + tile, []spec{act(3, 50, 96), weight(130, 96).times(0.2), weight(130)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Linear(x[0], x[1], x[2]) }})
			d.opts = saved
		}
	}
	for _, hd := range []int{16, 24, 32, 48, 56, 80, 96, 104, 128, 152} {
		for _, tg := range tgs {
			h := 2
			d := tg.be.Device()
			saved := d.opts
			d.opts.Attention = "flashp"
			runCase(t, r, tg, opCase{"Attention one row tile per warp D=" + itoa(hd), []spec{act(2, 600, h*hd), act(2, 70, h*hd), act(2, 70, h*hd)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
					return be.Attention(x[0], x[1], x[2], backend.AttentionParams{Heads: h, Scale: float32(1 / math.Sqrt(float64(hd)))})
				}})
			d.opts.Attention = "flash1"
			runCase(t, r, tg, opCase{"Attention single-stage D=" + itoa(hd), []spec{act(2, 131, h*hd), act(2, 70, h*hd), act(2, 70, h*hd)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
					return be.Attention(x[0], x[1], x[2], backend.AttentionParams{Heads: h, Scale: float32(1 / math.Sqrt(float64(hd)))})
				}})
			d.opts = saved
			runCase(t, r, tg, opCase{"Attention long D=" + itoa(hd), []spec{act(1, 700, h*hd), act(1, 150, h*hd), act(1, 150, h*hd)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
					return be.Attention(x[0], x[1], x[2], backend.AttentionParams{Heads: h, Scale: float32(1 / math.Sqrt(float64(hd)))})
				}})
			runCase(t, r, tg, opCase{"Attention D=" + itoa(hd), []spec{act(2, 131, h*hd), act(2, 70, h*hd), act(2, 70, h*hd)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
					return be.Attention(x[0], x[1], x[2], backend.AttentionParams{Heads: h, Scale: float32(1 / math.Sqrt(float64(hd)))})
				}})
		}
	}
}

// TestReshapeKeepsChannelsLast checks the view path of Reshape on images
// (the UNet's per-channel add goes through (B, C, H·W, 1)).
func TestReshapeKeepsChannelsLast(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 13))
	for _, tg := range targets(t) {
		runCase(t, r, tg, opCase{"per-channel add through a reshape", []spec{act(2, 16, 3, 5), act(2, 16)}, func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
			s := x[0].Shape()
			flat := be.Reshape(x[0], tensor.Shape{s[0], s[1], s[2] * s[3], 1})
			sum := be.AddBroadcast(flat, x[1])
			return be.GroupNorm(be.Reshape(sum, s), nil, nil, 4, 1e-5, false)
		}})
	}
	d, e := newFakeDevice(DefaultOptions())
	be := d.Backend(tensor.F16)
	x := be.FromFloat32(tensor.Shape{1, 8, 2, 2}, make([]float32, 32))
	y := be.Reshape(x, tensor.Shape{1, 8, 4, 1})
	be.ToFloat32(be.Reshape(y, tensor.Shape{1, 8, 2, 2}))
	if e.launches != 2 { // the transposes of the upload and of the download
		t.Fatalf("%d kernel launches for an upload, two reshapes and a download", e.launches)
	}
}

// TestConvMethods forces each convolution method (cuDNN where present,
// Kiln's implicit GEMM, im2col + cuBLAS) on every target.
func TestConvMethods(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 17))
	for _, method := range []string{"cudnn", "cudnn+bias", "implicit", "im2col"} {
		for _, tg := range targets(t) {
			d := tg.be.Device()
			saved := d.opts
			d.opts.Conv = method
			v := target{tg.name + "/" + method, tg.be, tg.tol}
			runCase(t, r, v, opCase{"Conv2D 3x3 " + method, []spec{act(2, 32, 9, 7), weight(48, 32, 3, 3).times(0.2), weight(48)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
					return be.Conv2D(x[0], x[1], x[2], backend.SymmetricPad(1, 1))
				}})
			runCase(t, r, v, opCase{"Conv2D 3x3 stride 2 " + method, []spec{act(1, 8, 9, 10), weight(16, 8, 3, 3).times(0.2), weight(16)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
					return be.Conv2D(x[0], x[1], x[2], backend.SymmetricPad(2, 1))
				}})
			runCase(t, r, v, opCase{"Conv2D asymmetric pad " + method, []spec{act(1, 32, 8, 8), weight(32, 32, 3, 3).times(0.2), weight(32)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
					return be.Conv2D(x[0], x[1], x[2], backend.Conv2DParams{Stride: 2, PadBottom: 1, PadRight: 1})
				}})
			d.opts = saved
		}
	}
}

// TestResidualFusion checks that additions after a convolution or a biased
// linear layer are folded into it, with unchanged results.
func TestResidualFusion(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 19))
	for _, tg := range targets(t) {
		d := tg.be.Device()
		before := d.Stats().Fused
		runCase(t, r, tg, opCase{"conv + residual", []spec{act(2, 32, 6, 5), weight(32, 32, 3, 3).times(0.2), weight(32), act(2, 32, 6, 5)},
			func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
				h := be.Conv2D(x[0], x[1], x[2], backend.SymmetricPad(1, 1))
				out := be.Add(x[3], h)
				be.Free(h)
				return out
			}})
		runCase(t, r, tg, opCase{"linear + residual", []spec{act(2, 7, 32), weight(32, 32).times(0.2), weight(32), act(2, 7, 32)},
			func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
				h := be.Linear(x[0], x[1], x[2])
				out := be.Add(h, x[3])
				be.Free(h)
				return out
			}})
		runCase(t, r, tg, opCase{"kept operand is not fused", []spec{act(2, 7, 32), weight(32, 32).times(0.2), weight(32), act(2, 7, 32)},
			func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
				h := be.Linear(x[0], x[1], x[2])
				out := be.Add(h, x[3])
				return be.Add(out, h)
			}})
		if d.opts.Fuse && d.Stats().Fused-before < 2 {
			t.Errorf("%s: %d additions fused, want at least 2", tg.name, d.Stats().Fused-before)
		}
	}
}

// TestSpeculativeReplay checks that a repeated segment is launched as soon
// as its uploads are recorded, that the result is right, and that a segment
// which then diverges is detected and run correctly instead.
func TestSpeculativeReplay(t *testing.T) {
	d, _ := newFakeDevice(DefaultOptions())
	be := d.Backend(tensor.F32)
	ref := cpu.New()
	r := rand.New(rand.NewPCG(seed(t), 23))
	wdata := randData(r, 16*16, 0.3)
	w := be.Upload(tensor.Shape{16, 16}, tensor.F32, f32Bytes(wdata))
	wr := ref.Upload(tensor.Shape{16, 16}, tensor.F32, f32Bytes(wdata))
	step := func(be backend.Backend, w *tensor.Tensor, x []float32, extra bool) []float32 {
		h := be.FromFloat32(tensor.Shape{3, 16}, x)
		for i := 0; i < 4; i++ {
			h = swapT(be, h, be.Linear(h, w, nil))
			h = swapT(be, h, be.SiLU(h))
		}
		if extra {
			h = swapT(be, h, be.Scale(h, 2))
		}
		out := be.ToFloat32(h)
		be.Free(h)
		return out
	}
	for i := 0; i < 6; i++ {
		x := randData(r, 48, 1)
		extra := i == 4
		got, want := step(be, w, x, extra), step(ref, wr, x, extra)
		if e := fixtures.RelErr(got, want); e > 1e-5 {
			t.Fatalf("step %d: relative error %.3g", i, e)
		}
	}
	st := d.Stats()
	if st.Speculated < 2 || st.Misspeculated != 1 {
		t.Fatalf("want speculative replays and one detected divergence: %+v", st)
	}
}

// TestSpeculationSeesWeightUploads checks that a graph launched early is
// not trusted when weights were uploaded after it (to memory it reads).
func TestSpeculationSeesWeightUploads(t *testing.T) {
	d, _ := newFakeDevice(DefaultOptions())
	be := d.Backend(tensor.F32)
	r := rand.New(rand.NewPCG(seed(t), 29))
	for i := 0; i < 5; i++ {
		x := be.FromFloat32(tensor.Shape{2, 8}, randData(r, 16, 1))
		wd := randData(r, 64, 1)
		w := be.Upload(tensor.Shape{8, 8}, tensor.F32, f32Bytes(wd)) // after x: the graph may already run
		got := be.ToFloat32(be.Linear(x, w, nil))
		ref := cpu.New()
		xr := ref.FromFloat32(tensor.Shape{2, 8}, be.ToFloat32(x))
		want := ref.ToFloat32(ref.Linear(xr, ref.Upload(tensor.Shape{8, 8}, tensor.F32, f32Bytes(wd)), nil))
		if e := fixtures.RelErr(got, want); e > 1e-5 {
			t.Fatalf("run %d: relative error %.3g (stats %+v)", i, e, d.Stats())
		}
		be.Free(x, w)
	}
}

// TestLinearMethods forces each matrix-product method on every target,
// with and without bias and with a residual addition to fuse.
func TestLinearMethods(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 31))
	for _, method := range []string{"cublas", "cublaslt", "implicit"} {
		for _, tg := range targets(t) {
			d := tg.be.Device()
			saved := d.opts
			d.opts.Linear = method
			d.opts.Conv = "cudnn+bias"
			v := target{tg.name + "/" + method, tg.be, tg.tol}
			runCase(t, r, v, opCase{"Linear bias " + method, []spec{act(2, 9, 64), weight(96, 64).times(0.2), weight(96)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Linear(x[0], x[1], x[2]) }})
			runCase(t, r, v, opCase{"Linear no bias " + method, []spec{act(2, 9, 64), weight(96, 64).times(0.2)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Linear(x[0], x[1], nil) }})
			runCase(t, r, v, opCase{"Linear + residual " + method, []spec{act(2, 9, 64), weight(64, 64).times(0.2), weight(64), act(2, 9, 64)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
					h := be.Linear(x[0], x[1], x[2])
					out := be.Add(x[3], h)
					be.Free(h)
					return out
				}})
			runCase(t, r, v, opCase{"Conv + residual (cudnn+bias) " + method, []spec{act(2, 32, 6, 5), weight(32, 32, 3, 3).times(0.2), weight(32), act(2, 32, 6, 5)},
				func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
					h := be.Conv2D(x[0], x[1], x[2], backend.SymmetricPad(1, 1))
					out := be.Add(h, x[3])
					be.Free(h)
					return out
				}})
			d.opts = saved
		}
	}
}

// TestTuningOnEmulator runs the measured choice on the emulated device
// (where every candidate takes no time): each candidate must pass the
// cross-check against the reference, and results must stay right.
func TestTuningOnEmulator(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 37))
	o := DefaultOptions()
	o.Poison = true
	d, _ := newFakeDevice(o)
	d.tune = true
	for _, dt := range []tensor.DType{tensor.F32, tensor.F16} {
		tg := target{"fake-tuned/" + dt.String(), d.Backend(dt), tolFor(dt)}
		runCase(t, r, tg, opCase{"tuned conv + residual", []spec{act(2, 32, 6, 5), weight(32, 32, 3, 3).times(0.2), weight(32), act(2, 32, 6, 5)},
			func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
				h := be.Conv2D(x[0], x[1], x[2], backend.SymmetricPad(1, 1))
				out := be.Add(h, x[3])
				be.Free(h)
				return out
			}})
		runCase(t, r, tg, opCase{"tuned linear", []spec{act(2, 9, 64), weight(96, 64).times(0.2), weight(96)},
			func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Linear(x[0], x[1], x[2]) }})
	}
	log := d.TuneLog()
	if len(log) != 4 {
		t.Fatalf("want 4 measured choices, got %d: %v", len(log), log)
	}
	for _, l := range log {
		if strings.Contains(l, "disagrees") {
			t.Errorf("a candidate failed the cross-check: %s", l)
		}
		t.Log(l)
	}
}
