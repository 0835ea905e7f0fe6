package cuda

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// The fake device's pinned memory is ordinary memory and its copies are
// synchronous (it has no stream).

func (e *fakeEngine) hostAlloc(n int64) ([]byte, error) { return make([]byte, n), nil }
func (e *fakeEngine) hostFree([]byte)                   {}
func (e *fakeEngine) copyOut(dst []byte, src uint64) error {
	copy(dst, e.bytes(src, int64(len(dst))))
	return nil
}
func (e *fakeEngine) copyIn(dst uint64, src []byte) error {
	copy(e.bytes(dst, int64(len(src))), src)
	return nil
}

func (e *nullEngine) hostAlloc(n int64) ([]byte, error) { return make([]byte, n), nil }
func (e *nullEngine) hostFree([]byte)                   {}
func (e *nullEngine) copyOut([]byte, uint64) error      { return nil }
func (e *nullEngine) copyIn(uint64, []byte) error       { return nil }

// weightBytes reads a weight's device bytes from the fake engine.
func weightBytes(e *fakeEngine, t *tensor.Tensor) []byte {
	b := t.Storage().(*storage).buf
	return bytes.Clone(e.bytes(b.addr, b.size))
}

func linearOut(be backend.Backend, x []float32, w, bias *tensor.Tensor) []float32 {
	xt := be.FromFloat32(tensor.Shape{4, 32}, x)
	y := be.Linear(xt, w, bias)
	out := be.ToFloat32(y)
	be.Free(xt, y)
	return out
}

func TestOffloadRestoreRoundTripIsBitExact(t *testing.T) {
	d, e := newFakeDevice(DefaultOptions())
	gb, g := d.Backend(tensor.F16).Grouped()
	r := rand.New(rand.NewPCG(seed(t), 23))
	w := gb.Upload(tensor.Shape{48, 32}, tensor.F32, f32Bytes(randData(r, 48*32, 0.2)))
	bias := gb.Upload(tensor.Shape{48}, tensor.F32, f32Bytes(randData(r, 48, 0.2)))
	conv := gb.Upload(tensor.Shape{8, 4, 3, 3}, tensor.F32, f32Bytes(randData(r, 8*4*9, 0.2)))
	x := randData(r, 4*32, 1)
	want := linearOut(gb, x, w, bias) // also makes the bias's f16 copy
	before := [][]byte{weightBytes(e, w), weightBytes(e, bias), weightBytes(e, conv)}
	dev0, uniq0, host0 := g.Footprint()
	if dev0 == 0 || uniq0 != dev0 || host0 != 0 {
		t.Fatalf("footprint before offload: %d %d %d", dev0, uniq0, host0)
	}
	weights0, live0 := d.Stats().Weights, e.live

	if err := g.Offload(); err != nil {
		t.Fatal(err)
	}
	if !g.Offloaded() || d.Stats().Weights != 0 {
		t.Fatalf("offloaded=%v, %d weight bytes left on the device (had %d)", g.Offloaded(), d.Stats().Weights, weights0)
	}
	if dev, _, host := g.Footprint(); dev != 0 || host != dev0 {
		t.Fatalf("footprint offloaded: device %d host %d", dev, host)
	}
	// The device memory is free: trimming returns it to the driver.
	if err := d.MemView().Trim(); err != nil {
		t.Fatal(err)
	}
	if e.live >= live0 {
		t.Fatalf("device bytes %d after offload and trim, %d before", e.live, live0)
	}
	// Using an offloaded weight is a clear error, not garbage.
	err := func() (err error) {
		defer backend.Recover(&err)
		linearOut(gb, x, w, bias)
		return nil
	}()
	if err == nil || !strings.Contains(err.Error(), "offloaded") {
		t.Fatalf("use while offloaded: %v", err)
	}

	if err := g.Restore(); err != nil {
		t.Fatal(err)
	}
	after := [][]byte{weightBytes(e, w), weightBytes(e, bias), weightBytes(e, conv)}
	for i := range before {
		if !bytes.Equal(before[i], after[i]) {
			t.Fatalf("weight %d changed across offload and restore", i)
		}
	}
	if got := d.Stats().Weights; got != dev0 {
		t.Fatalf("weights after restore %d, want %d (bias copies are made again on use)", got, dev0)
	}
	got := linearOut(gb, x, w, bias)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("output %d: %v after restore, %v before", i, got[i], want[i])
		}
	}
	// Offload and restore again: the pinned block, spare since the restore,
	// is reused rather than pinned anew.
	if len(d.wt.spare) != 1 {
		t.Fatalf("%d spare pinned blocks after a restore, want 1", len(d.wt.spare))
	}
	spare := d.wt.spare[0]
	if err := g.Offload(); err != nil {
		t.Fatal(err)
	}
	if st := d.wt.state[w.Storage().(*storage).buf]; st.host != spare || len(d.wt.spare) != 0 {
		t.Fatal("second offload pinned a new block instead of reusing the spare")
	}
	if err := g.Restore(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(weightBytes(e, conv), before[2]) {
		t.Fatal("second round trip changed the filter")
	}
}

func TestIdenticalWeightsAreSharedAndOffloadedLast(t *testing.T) {
	d, e := newFakeDevice(DefaultOptions())
	r := rand.New(rand.NewPCG(seed(t), 29))
	vae := f32Bytes(randData(r, 64*64, 0.1)) // the shared component
	ownA := f32Bytes(randData(r, 64*64, 0.1))
	ownB := f32Bytes(randData(r, 64*64, 0.1))
	ab, ga := d.Backend(tensor.F16).Grouped()
	va := ab.Upload(tensor.Shape{64, 64}, tensor.F32, vae)
	ab.Upload(tensor.Shape{64, 64}, tensor.F32, ownA)
	weightsA := d.Stats().Weights
	bb, gbk := d.Backend(tensor.F16).Grouped()
	vb := bb.Upload(tensor.Shape{64, 64}, tensor.F32, vae)
	bb.Upload(tensor.Shape{64, 64}, tensor.F32, ownB)
	size := int64(64 * 64 * 2)
	if got := d.Stats().Weights; got != weightsA+size {
		t.Fatalf("second model added %d weight bytes, want %d (its own part only)", got-weightsA, size)
	}
	if d.SharedBytes() != size || va.Storage().(*storage).buf != vb.Storage().(*storage).buf {
		t.Fatalf("shared %d bytes", d.SharedBytes())
	}
	// Same bytes in another dtype or shape are different weights.
	d.Backend(tensor.F16).Upload(tensor.Shape{32, 128}, tensor.F32, vae)
	if d.SharedBytes() != size {
		t.Fatal("a reshaped weight was shared")
	}
	if dev, uniq, _ := ga.Footprint(); dev != 2*size || uniq != size {
		t.Fatalf("A footprint: device %d unique %d", dev, uniq)
	}
	// Offloading A moves only its own part: B still uses the shared one.
	if err := ga.Offload(); err != nil {
		t.Fatal(err)
	}
	if _, _, host := ga.Footprint(); host != size {
		t.Fatalf("A holds %d host bytes, want %d", host, size)
	}
	if dev, uniq, _ := gbk.Footprint(); dev != 2*size || uniq != 2*size {
		t.Fatalf("B footprint with A offloaded: %d %d", dev, uniq)
	}
	vaeBytes := weightBytes(e, vb)
	// Offloading B too moves the shared part.
	if err := gbk.Offload(); err != nil {
		t.Fatal(err)
	}
	if dev, _, host := gbk.Footprint(); dev != 0 || host != 2*size {
		t.Fatalf("B footprint offloaded: %d %d", dev, host)
	}
	// Restoring A brings the shared part back for it; B's tensors read it too
	// only after B is restored (its own part is still on the host).
	if err := ga.Restore(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(weightBytes(e, va), vaeBytes) {
		t.Fatal("shared weight changed")
	}
	if err := gbk.Restore(); err != nil {
		t.Fatal(err)
	}
	// A model loaded while the shared weight is offloaded gets it back.
	ga.Offload()
	gbk.Offload()
	cb, gc := d.Backend(tensor.F16).Grouped()
	vc := cb.Upload(tensor.Shape{64, 64}, tensor.F32, vae)
	if !bytes.Equal(weightBytes(e, vc), vaeBytes) {
		t.Fatal("re-shared offloaded weight differs")
	}
	if dev, _, _ := gc.Footprint(); dev != size {
		t.Fatalf("C footprint %d", dev)
	}
	// Closing a group frees what only it holds, at once; shared weights
	// stay for the groups still holding them.
	if err := gc.(*Group).Close(); err != nil {
		t.Fatal(err)
	}
	if err := gc.Offload(); err == nil {
		t.Fatal("offload of a closed group succeeded")
	}
	hostBefore := d.wt.hostHeld.Load()
	if err := ga.(*Group).Close(); err != nil {
		t.Fatal(err)
	}
	if got := d.wt.hostHeld.Load(); got != hostBefore-size {
		t.Fatalf("closing offloaded A left %d pinned bytes, want %d", got, hostBefore-size)
	}
	if err := gbk.Restore(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(weightBytes(e, vb), vaeBytes) || d.wt.hostHeld.Load() != 0 {
		t.Fatalf("B after A closed: pinned %d", d.wt.hostHeld.Load())
	}
	weights := d.Stats().Weights
	if err := gbk.(*Group).Close(); err != nil {
		t.Fatal(err)
	}
	if got := d.Stats().Weights; got != weights-2*size {
		t.Fatalf("closing B freed %d weight bytes, want %d", weights-got, 2*size)
	}
	runtime.KeepAlive(vc)
}

func TestUngroupedWeightsStayAndRestoreFailsCleanly(t *testing.T) {
	d, e := newFakeDevice(DefaultOptions())
	r := rand.New(rand.NewPCG(seed(t), 31))
	raw := f32Bytes(randData(r, 256*256, 0.1))
	plain := d.Backend(tensor.F16).Upload(tensor.Shape{256, 256}, tensor.F32, raw)
	gb, g := d.Backend(tensor.F16).Grouped()
	shared := gb.Upload(tensor.Shape{256, 256}, tensor.F32, raw)
	own := gb.Upload(tensor.Shape{256, 256}, tensor.F32, f32Bytes(randData(r, 256*256, 0.1)))
	if err := g.Offload(); err != nil {
		t.Fatal(err)
	}
	if shared.Storage().(*storage).buf.dead != nil || plain.Storage().(*storage).buf.dead != nil {
		t.Fatal("a weight an ungrouped upload holds was offloaded")
	}
	ownBytes := append([]byte(nil), g.(*Group).d.wt.state[own.Storage().(*storage).buf].host.mem...)
	// No room on the device: Restore fails with out-of-memory and leaves
	// the group offloaded and intact.
	d.ReleaseGraphs() // the offloaded block goes back to the driver
	e.freeLimit = e.live + 1024
	if err := g.Restore(); !errors.Is(err, backend.ErrOutOfMemory) || !g.Offloaded() {
		t.Fatalf("restore without room: %v offloaded=%v", err, g.Offloaded())
	}
	e.freeLimit = 0
	if err := g.Restore(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(weightBytes(e, own)[:len(ownBytes)], ownBytes) {
		t.Fatal("restored weight differs")
	}
	runtime.KeepAlive(plain)
	runtime.KeepAlive(shared)
}
