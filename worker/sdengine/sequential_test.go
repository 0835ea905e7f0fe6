package sdengine

import (
	"context"
	"fmt"
	"image"
	"testing"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/worker"
)

// fakeDevice is a CPU backend that groups weights like a GPU would: it
// counts each group's weight bytes (four per element, as the CPU holds
// them, which the engine's component estimates also count) as resident
// or offloaded, refuses to hold more than limit bytes of weights (out of
// memory), and fails any op that reads a weight of an offloaded group.
type fakeDevice struct {
	backend.Backend
	owner           map[*tensor.Tensor]*fakeGroup
	resident, peak  int64
	limit           int64
	offloads, loads int
}

func newFakeDevice(limit int64) *fakeDevice {
	return &fakeDevice{Backend: cpu.New(), owner: map[*tensor.Tensor]*fakeGroup{}, limit: limit}
}

func (d *fakeDevice) hold(n int64) error {
	if d.limit > 0 && d.resident+n > d.limit {
		return fmt.Errorf("fake device: %d + %d weight bytes past %d: %w", d.resident, n, d.limit, backend.ErrOutOfMemory)
	}
	d.resident += n
	d.peak = max(d.peak, d.resident)
	return nil
}

// Grouped implements backend.WeightGrouper.
func (d *fakeDevice) Grouped() (backend.Backend, backend.WeightGroup) {
	g := &fakeGroup{d: d}
	return &fakeView{fakeDevice: d, g: g}, g
}

type fakeGroup struct {
	d         *fakeDevice
	bytes     int64
	offloaded bool
}

func (g *fakeGroup) Footprint() (int64, int64, int64) {
	if g.offloaded {
		return 0, 0, g.bytes
	}
	return g.bytes, g.bytes, 0
}

func (g *fakeGroup) Offload() error {
	if !g.offloaded {
		g.offloaded = true
		g.d.resident -= g.bytes
		g.d.offloads++
	}
	return nil
}

func (g *fakeGroup) Restore() error {
	if g.offloaded {
		if err := g.d.hold(g.bytes); err != nil {
			return err
		}
		g.offloaded = false
		g.d.loads++
	}
	return nil
}

func (g *fakeGroup) Offloaded() bool { return g.offloaded }
func (g *fakeGroup) Close() error    { return g.Offload() }

// fakeView is one group's view of the fake device.
type fakeView struct {
	*fakeDevice
	g *fakeGroup
}

func (v *fakeView) Upload(shape tensor.Shape, dt tensor.DType, raw []byte) *tensor.Tensor {
	n := int64(shape.Numel()) * 4
	if err := v.hold(n); err != nil {
		backend.FailErr("Upload", err)
	}
	v.g.bytes += n
	t := v.Backend.Upload(shape, dt, raw)
	v.owner[t] = v.g
	return t
}

// check fails when a weight of an offloaded group is read.
func (d *fakeDevice) check(op string, ws ...*tensor.Tensor) {
	for _, w := range ws {
		if g := d.owner[w]; g != nil && g.offloaded {
			backend.Fail(op, "reads a weight %s of an offloaded group", w)
		}
	}
}

func (d *fakeDevice) Linear(x, w, b *tensor.Tensor) *tensor.Tensor {
	d.check("Linear", w, b)
	return d.Backend.Linear(x, w, b)
}

func (d *fakeDevice) Conv2D(x, w, b *tensor.Tensor, p backend.Conv2DParams) *tensor.Tensor {
	d.check("Conv2D", w, b)
	return d.Backend.Conv2D(x, w, b, p)
}

func (d *fakeDevice) LayerNorm(x, w, b *tensor.Tensor, eps float32) *tensor.Tensor {
	d.check("LayerNorm", w, b)
	return d.Backend.LayerNorm(x, w, b, eps)
}

func (d *fakeDevice) GroupNorm(x, w, b *tensor.Tensor, groups int, eps float32, silu bool) *tensor.Tensor {
	d.check("GroupNorm", w, b)
	return d.Backend.GroupNorm(x, w, b, groups, eps, silu)
}

func (d *fakeDevice) Embedding(table *tensor.Tensor, ids []int32, shape tensor.Shape) *tensor.Tensor {
	d.check("Embedding", table)
	return d.Backend.Embedding(table, ids, shape)
}

func (d *fakeDevice) AddBroadcast(x, v *tensor.Tensor) *tensor.Tensor {
	d.check("AddBroadcast", v)
	return d.Backend.AddBroadcast(x, v)
}

func sameImages(t *testing.T, got, want []image.Image) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d images, want %d", len(got), len(want))
	}
	for i := range got {
		b := want[i].Bounds()
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				if got[i].At(x, y) != want[i].At(x, y) {
					t.Fatalf("image %d differs at (%d, %d): %v, want %v", i, x, y, got[i].At(x, y), want[i].At(x, y))
				}
			}
		}
	}
}

// TestSequentialLoading loads the fixture model on a fake device whose
// budget (and weight limit) is below the model's weights: the engine
// chooses sequential loading by itself, the device never holds more than
// one stage's weights (an op reading an offloaded weight would fail), the
// images equal those of the CPU engine, and the running batch reports it
// for the job record. With a budget that fits, nothing changes.
func TestSequentialLoading(t *testing.T) {
	ref, err := New("cpu", nil)
	if err != nil {
		t.Fatal(err)
	}
	mdl := fixtureModel(t)
	req := worker.Request{Prompt: "a red fox", NegativePrompt: "blurry", Width: 64, Height: 64, Steps: 3, N: 2, Guidance: 7, Sampler: "euler", Seed: 7}
	rm, err := ref.Load(context.Background(), mdl)
	if err != nil {
		t.Fatal(err)
	}
	want, err := rm.Generate(context.Background(), req, nil)
	rm.Close()
	if err != nil {
		t.Fatal(err)
	}
	var total, largest int64
	for _, c := range rm.(*Model).comps {
		total += c.Bytes
		largest = max(largest, c.Bytes)
	}

	for _, tc := range []struct {
		name       string
		budget     int64
		sequential bool
	}{
		{name: "too small", budget: largest + largest/4, sequential: true},
		{name: "fits", budget: 64 * total},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := newFakeDevice(tc.budget)
			mgr, err := memory.New(memory.Config{Name: "fake", Budget: tc.budget, DefaultBytesPerPixel: 1})
			if err != nil {
				t.Fatal(err)
			}
			e, err := NewOnBackend("fake:0", dev, nil)
			if err != nil {
				t.Fatal(err)
			}
			e.SetMemory(mgr)
			if !e.LoadsLarger() {
				t.Fatal("an engine on a grouping backend with a manager must load larger models")
			}
			wm, err := e.Load(context.Background(), mdl)
			if err != nil {
				t.Fatal(err)
			}
			defer wm.Close()
			m := wm.(*Model)
			if m.Sequential() != tc.sequential || (m.LoadReason() != "") != tc.sequential {
				t.Fatalf("sequential %v (%q), want %v", m.Sequential(), m.LoadReason(), tc.sequential)
			}
			rb := m.StartBatch(context.Background())
			if _, err := rb.Add(worker.BatchItem{Request: req}, nil); err != nil {
				t.Fatal(err)
			}
			var got *worker.Result
			for rb.Len() > 0 {
				for _, d := range rb.Step() {
					if d.Err != nil {
						t.Fatal(d.Err)
					}
					got = d.Result
				}
			}
			sameImages(t, got.Images, want.Images)
			rep := rb.(worker.MemoryReporter).MemoryReport()
			if rep.Sequential != tc.sequential {
				t.Fatalf("report %+v", rep)
			}
			if !tc.sequential {
				if dev.offloads != 0 || dev.peak != dev.resident {
					t.Fatalf("a model that fits moved weights: %d offloads", dev.offloads)
				}
				return
			}
			var parts int64
			for _, f := range m.seq.PartFootprints() {
				parts = max(parts, f[0]+f[2])
			}
			if dev.peak != parts || dev.peak > largest || dev.peak >= total {
				t.Fatalf("device held %d weight bytes at once; the largest component has %d, all %d", dev.peak, largest, total)
			}
			if s := m.SequentialStats(); s.Switches < 3 {
				t.Fatalf("stats %+v: want at least encoder → denoiser → codec", s)
			}
			if n := m.DeviceBytes(); n > largest || n <= 0 {
				t.Fatalf("DeviceBytes %d: want the largest stage's (≤ %d)", n, largest)
			}
		})
	}
}

// TestWeightPrecision loads the fixture model with int8 UNet weights on
// the CPU: it generates (close to, not equal to, the full-precision
// model's latents is core/quant's test), and a grouping device refuses
// 8-bit weights until it has a device kernel.
func TestWeightPrecision(t *testing.T) {
	e, err := New("cpu", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetWeightPrecision("int4"); err == nil {
		t.Fatal("int4 accepted")
	}
	if err := e.SetWeightPrecision("int8"); err != nil {
		t.Fatal(err)
	}
	m, err := e.Load(context.Background(), fixtureModel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	res, err := m.Generate(context.Background(), worker.Request{Prompt: "a red fox", Width: 64, Height: 64, Steps: 2, N: 1, Guidance: 7, Sampler: "euler", Seed: 7}, nil)
	if err != nil || len(res.Images) != 1 {
		t.Fatalf("int8 model: %v", err)
	}
	g, _ := NewOnBackend("fake:0", newFakeDevice(0), nil)
	if err := g.SetWeightPrecision("fp8"); err == nil {
		t.Fatal("a grouping device accepted fp8 weights")
	}
}
