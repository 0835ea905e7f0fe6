package cuda

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// TestDeferredTuningAndPersistence: with tuning deferred, new shapes run
// (correctly) on the default without measuring and are queued;
// TuneDeferred measures them; the choices survive a save and load into a
// fresh device of the same key, which then measures nothing, and a file of
// another key is refused.
func TestDeferredTuningAndPersistence(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 41))
	o := DefaultOptions()
	o.Poison = true
	d, _ := newFakeDevice(o)
	d.tune = true
	d.DeferTuning(true)
	tg := target{"fake-deferred/F16", d.Backend(tensor.F16), tolFor(tensor.F16)}
	conv := opCase{"conv", []spec{act(2, 32, 6, 5), weight(32, 32, 3, 3).times(0.2), weight(32)},
		func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor {
			return be.Conv2D(x[0], x[1], x[2], backend.SymmetricPad(1, 1))
		}}
	lin := opCase{"linear", []spec{act(2, 9, 64), weight(96, 64).times(0.2), weight(96)},
		func(be backend.Backend, x []*tensor.Tensor) *tensor.Tensor { return be.Linear(x[0], x[1], x[2]) }}
	runCase(t, r, tg, conv)
	runCase(t, r, tg, lin)
	if n := len(d.TuneLog()); n != 0 || d.DeferredShapes() != 2 {
		t.Fatalf("deferred: %d shapes measured, %d queued; want 0 and 2", n, d.DeferredShapes())
	}
	if n := d.TuneDeferred(10); n != 2 || d.DeferredShapes() != 0 || len(d.TuneLog()) != 2 || d.TunedSinceSave() != 2 {
		t.Fatalf("TuneDeferred measured %d (log %d), %d left", n, len(d.TuneLog()), d.DeferredShapes())
	}
	runCase(t, r, tg, conv) // the measured choice computes right too
	dir := t.TempDir()
	if err := d.SaveTuning(dir); err != nil {
		t.Fatal(err)
	}
	fresh, _ := newFakeDevice(o)
	fresh.tune = true
	if n, err := fresh.LoadTuning(dir); err != nil || n != 2 {
		t.Fatalf("loaded %d choices: %v", n, err)
	}
	runCase(t, r, target{"fake-loaded/F16", fresh.Backend(tensor.F16), tolFor(tensor.F16)}, conv)
	runCase(t, r, target{"fake-loaded/F16", fresh.Backend(tensor.F16), tolFor(tensor.F16)}, lin)
	if n := len(fresh.TuneLog()); n != 0 {
		t.Fatalf("a device with loaded choices measured %d shapes again", n)
	}
	data, _ := d.ExportTuning()
	other, _ := newFakeDevice(o)
	other.info.Name = "another GPU"
	if _, err := other.ImportTuning(data); !errors.Is(err, ErrTuningKey) {
		t.Fatalf("choices of another device: %v", err)
	}
	if n, err := other.LoadTuning(t.TempDir()); n != 0 || err != nil {
		t.Fatalf("no file: %d, %v", n, err)
	}
}
