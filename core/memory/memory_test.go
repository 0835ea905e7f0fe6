package memory

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/kiln-project/kiln/core/backend"
)

// fakeDevice is an allocator stand-in: tests move Used and Peak by hand.
type fakeDevice struct {
	mu     sync.Mutex
	st     DeviceStats
	trims  int
	resets int
}

func (d *fakeDevice) MemStats() DeviceStats { d.mu.Lock(); defer d.mu.Unlock(); return d.st }
func (d *fakeDevice) ResetPeak()            { d.mu.Lock(); d.st.Peak = d.st.Used; d.resets++; d.mu.Unlock() }
func (d *fakeDevice) Trim() error {
	d.mu.Lock()
	d.st.Reserved = d.st.Used
	d.trims++
	d.mu.Unlock()
	return nil
}
func (d *fakeDevice) use(n int64) {
	d.mu.Lock()
	d.st.Used += n
	d.st.Reserved = max(d.st.Reserved, d.st.Used)
	d.st.Peak = max(d.st.Peak, d.st.Used)
	d.mu.Unlock()
}

const gib = int64(1) << 30

func newManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "cuda:0"
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestNewRejectsBadBudgets(t *testing.T) {
	for _, c := range []Config{{Budget: 0}, {Budget: -1}, {Budget: 1, HostBudget: -1}} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func TestFreeBytesCountsWeightsAndRunningBatches(t *testing.T) {
	m := newManager(t, Config{Budget: 10 * gib, DefaultBytesPerPixel: 1024})
	if got := m.FreeBytes(); got != 10*gib {
		t.Fatalf("empty manager: free %d", got)
	}
	if err := m.Place("sd15", GPU, []Component{{Kind: "unet", Hash: "u1", Bytes: 3 * gib}, {Kind: "vae", Hash: "v", Bytes: gib}}); err != nil {
		t.Fatal(err)
	}
	if got := m.FreeBytes(); got != 6*gib {
		t.Fatalf("after placing 4 GiB: free %d", got)
	}
	b := Batch{Model: "sd15", Images: 4, Width: 512, Height: 512} // 4·512²·1024 = 1 GiB
	r, err := m.Reserve(b, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.FreeBytes(); got != 5*gib {
		t.Fatalf("while running: free %d, want 5 GiB", got)
	}
	if err := r.End(true); err != nil {
		t.Fatal(err)
	}
	r.End(true) // idempotent
	if got := m.FreeBytes(); got != 6*gib {
		t.Fatalf("after the run: free %d", got)
	}
}

func TestCanRunAndMaxImages(t *testing.T) {
	m := newManager(t, Config{Budget: 4 * gib, DefaultBytesPerPixel: 1024})
	m.Place("sd15", GPU, []Component{{Kind: "unet", Bytes: 2 * gib}})
	small := Batch{Model: "sd15", Images: 4, Width: 512, Height: 512} // 1 GiB
	if d := m.CanRun(small); !d.OK || d.Need != gib || d.Measured || d.MaxImages != 8 {
		t.Fatalf("small batch: %+v", d)
	}
	big := Batch{Model: "sd15", Images: 12, Width: 512, Height: 512} // 3 GiB > 2 free
	d := m.CanRun(big)
	if d.OK || d.MaxImages != 8 || d.Reason == "" {
		t.Fatalf("big batch: %+v", d)
	}
	if _, err := m.Reserve(big, false); !errors.Is(err, ErrBudget) {
		t.Fatalf("reserving a batch larger than the free budget: %v", err)
	}
	// Running batches reduce what fits.
	r, _ := m.Reserve(small, false)
	if d := m.CanRun(Batch{Model: "sd15", Images: 5, Width: 512, Height: 512}); d.OK || d.MaxImages != 4 {
		t.Fatalf("with one batch running: %+v", d)
	}
	r.End(false)
}

func TestMeasuredPeaksPersistAndScale(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sub", "peaks.json")
	dev := &fakeDevice{st: DeviceStats{Used: 5 * gib}}
	m := newManager(t, Config{Budget: 40 * gib, PeakFile: file, Device: dev})
	b := Batch{Model: "sdxl", Images: 2, Width: 1024, Height: 1024}
	if _, measured := m.ActivationBytes(b); measured {
		t.Fatal("measured before any run")
	}
	r, err := m.Reserve(b, true)
	if err != nil {
		t.Fatal(err)
	}
	dev.use(3 * gib) // the batch's activations
	dev.use(-3 * gib)
	if err := r.End(true); err != nil {
		t.Fatal(err)
	}
	if got, measured := m.ActivationBytes(b); !measured || got != 3*gib {
		t.Fatalf("after measuring: %d measured=%v", got, measured)
	}
	// A failed run records nothing.
	r2, _ := m.Reserve(Batch{Model: "sdxl", Images: 1, Width: 64, Height: 64}, true)
	dev.use(gib)
	dev.use(-gib)
	r2.End(false)
	if _, measured := m.ActivationBytes(Batch{Model: "sdxl", Images: 1, Width: 64, Height: 64}); measured {
		t.Fatal("a failed run's peak was recorded")
	}
	// Another batch of the model scales the measurement by pixels.
	if got, measured := m.ActivationBytes(Batch{Model: "sdxl", Images: 4, Width: 1024, Height: 1024}); measured || got != 6*gib {
		t.Fatalf("scaled estimate %d measured=%v, want 6 GiB", got, measured)
	}
	// A new manager (a restart) reads the file.
	m2 := newManager(t, Config{Budget: 40 * gib, PeakFile: file})
	if got, measured := m2.ActivationBytes(b); !measured || got != 3*gib {
		t.Fatalf("after restart: %d measured=%v", got, measured)
	}
	// A file for another device, or a corrupt one, is ignored.
	if got, measured := newManager(t, Config{Name: "cuda:1", Budget: gib, PeakFile: file}).ActivationBytes(b); measured {
		t.Fatalf("peak of cuda:0 used for cuda:1: %d", got)
	}
	os.WriteFile(file, []byte("{not json"), 0o644)
	if _, measured := newManager(t, Config{Budget: gib, PeakFile: file}).ActivationBytes(b); measured {
		t.Fatal("corrupt peak file used")
	}
}

func TestRecordPeakKeepsLargest(t *testing.T) {
	m := newManager(t, Config{Budget: gib})
	b := Batch{Model: "a", Images: 1, Width: 8, Height: 8}
	m.RecordPeak(b, 100)
	m.RecordPeak(b, 50)
	if got, _ := m.ActivationBytes(b); got != 100 {
		t.Fatalf("peak %d, want the largest (100)", got)
	}
}

func TestSharingCountsComponentsOnce(t *testing.T) {
	m := newManager(t, Config{Budget: 20 * gib, HostBudget: 8 * gib})
	te := Component{Kind: "text_encoder", Hash: "te", Bytes: 1 * gib}
	vae := Component{Kind: "vae", Hash: "vae", Bytes: 2 * gib}
	m.Place("ft-a", GPU, []Component{te, vae, {Kind: "unet", Hash: "ua", Bytes: 4 * gib}})
	if got := m.AddedBytes(GPU, []Component{te, vae, {Kind: "unet", Hash: "ub", Bytes: 4 * gib}}); got != 4*gib {
		t.Fatalf("adding a fine-tune sharing TE and VAE costs %d, want only its UNet", got)
	}
	m.Place("ft-b", GPU, []Component{te, vae, {Kind: "unet", Hash: "ub", Bytes: 4 * gib}})
	if got := m.TierBytes(GPU); got != 11*gib {
		t.Fatalf("GPU bytes %d, want 11 GiB (shared 3 GiB once)", got)
	}
	if got := m.SavedBytes(GPU); got != 3*gib {
		t.Fatalf("saved %d, want 3 GiB", got)
	}
	us := m.Models()
	if len(us) != 2 || us[0].Model != "ft-a" || us[0].Bytes != 7*gib || us[0].Unique != 4*gib || len(us[0].Shared) != 2 ||
		!reflect.DeepEqual(us[0].Shared[0].With, []string{"ft-b"}) {
		t.Fatalf("usage: %+v", us)
	}
	// Offloading ft-b keeps the shared parts on the GPU (ft-a holds them):
	// only its UNet moves to host memory.
	m.Place("ft-b", Host, []Component{te, vae, {Kind: "unet", Hash: "ub", Bytes: 4 * gib}})
	if g, h := m.TierBytes(GPU), m.TierBytes(Host); g != 7*gib || h != 4*gib {
		t.Fatalf("after offloading ft-b: gpu %d host %d", g, h)
	}
	if got := m.HostFreeBytes(); got != 4*gib {
		t.Fatalf("host free %d", got)
	}
	if got := m.Models()[1].Unique; got != 4*gib {
		t.Fatalf("ft-b unique on host %d", got)
	}
	// Dropping ft-a: the shared parts now count on the host with ft-b.
	m.Remove("ft-a")
	if g, h := m.TierBytes(GPU), m.TierBytes(Host); g != 0 || h != 7*gib {
		t.Fatalf("after dropping ft-a: gpu %d host %d", g, h)
	}
	if err := m.Place("x", Tier(7), nil); err == nil {
		t.Fatal("unknown tier accepted")
	}
	// Unhashed components are never shared.
	m.Place("p", GPU, []Component{{Kind: "vae", Bytes: 1}})
	m.Place("q", GPU, []Component{{Kind: "vae", Bytes: 1}})
	if got := m.TierBytes(GPU); got != 2 {
		t.Fatalf("unhashed components shared: %d", got)
	}
}

func TestTrimIfIdle(t *testing.T) {
	now := time.Unix(1000, 0)
	dev := &fakeDevice{st: DeviceStats{Used: 10, Reserved: 100}}
	m := newManager(t, Config{Budget: gib, Device: dev, Now: func() time.Time { return now }})
	if ok, _ := m.TrimIfIdle(time.Minute); ok {
		t.Fatal("trimmed before the idle period")
	}
	now = now.Add(2 * time.Minute)
	r, _ := m.Reserve(Batch{Model: "a", Images: 1, Width: 8, Height: 8}, false)
	if ok, _ := m.TrimIfIdle(time.Minute); ok {
		t.Fatal("trimmed while a batch runs")
	}
	r.End(true)
	now = now.Add(2 * time.Minute)
	if ok, err := m.TrimIfIdle(time.Minute); !ok || err != nil || dev.trims != 1 || dev.MemStats().Reserved != 10 {
		t.Fatalf("idle trim: %v %v trims=%d", ok, err, dev.trims)
	}
	now = now.Add(2 * time.Minute)
	if ok, _ := m.TrimIfIdle(time.Minute); ok {
		t.Fatal("trimmed with nothing cached")
	}
}

func oom(n int) error { return fmt.Errorf("unet: allocating %d MiB: %w", n, backend.ErrOutOfMemory) }

func TestSplitHalvesOnOOM(t *testing.T) {
	var ran [][2]int
	fit := 3 // at most 3 items fit
	rep, err := Split(context.Background(), 8, func(_ context.Context, lo, hi int) error {
		if hi-lo > fit {
			return oom(hi - lo)
		}
		ran = append(ran, [2]int{lo, hi})
		return nil
	}, Recovery{})
	if err != nil {
		t.Fatal(err)
	}
	// 8 → 4 → 2: then chunks of 2 cover everything, each item run once.
	want := [][2]int{{0, 2}, {2, 4}, {4, 6}, {6, 8}}
	if !reflect.DeepEqual(ran, want) || rep.Splits != 2 || rep.Chunk != 2 || rep.Attempts != 6 || !rep.Recovered() {
		t.Fatalf("ran %v report %+v", ran, rep)
	}
}

func TestSplitLadder(t *testing.T) {
	var steps []string
	freed, seq := false, false
	rec := Recovery{
		FreeOthers: func(context.Context) error { steps = append(steps, "free"); freed = true; return nil },
		Sequential: func(context.Context) error { steps = append(steps, "seq"); seq = true; return nil },
	}
	// Fits only after sequential loading.
	rep, err := Split(context.Background(), 2, func(_ context.Context, lo, hi int) error {
		if !seq || hi-lo > 1 {
			return oom(1)
		}
		return nil
	}, rec)
	if err != nil || !rep.FreedOthers || !rep.Sequential || !reflect.DeepEqual(steps, []string{"free", "seq"}) {
		t.Fatalf("err %v report %+v steps %v", err, rep, steps)
	}
	// Never fits: a clear error that is still an out-of-memory error.
	steps, freed, seq = nil, false, false
	_, err = Split(context.Background(), 1, func(context.Context, int, int) error { return oom(1) }, rec)
	if !errors.Is(err, ErrOutOfMemory) || !errors.Is(err, backend.ErrOutOfMemory) || len(steps) != 2 {
		t.Fatalf("never fits: %v (steps %v)", err, steps)
	}
	_ = freed
	// Other errors stop at once.
	boom := errors.New("bad weights")
	calls := 0
	if _, err := Split(context.Background(), 4, func(context.Context, int, int) error { calls++; return boom }, rec); !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("other error: %v after %d calls", err, calls)
	}
	// A failing recovery step is reported.
	bad := Recovery{FreeOthers: func(context.Context) error { return errors.New("offload failed") }}
	if _, err := Split(context.Background(), 1, func(context.Context, int, int) error { return oom(1) }, bad); err == nil || errors.Is(err, ErrOutOfMemory) {
		t.Fatalf("failing recovery: %v", err)
	}
	// Cancellation stops it.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Split(ctx, 3, func(context.Context, int, int) error { return nil }, rec); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
}

func TestCollectAndConcurrency(t *testing.T) {
	dev := &fakeDevice{st: DeviceStats{Total: 80 * gib, Used: gib, Reserved: 2 * gib, Weights: gib}}
	m := newManager(t, Config{Budget: 8 * gib, HostBudget: gib, Device: dev, PeakFile: filepath.Join(t.TempDir(), "p.json")})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				b := Batch{Model: fmt.Sprint("m", i%3), Images: 1 + j%4, Width: 64, Height: 64}
				m.Place(b.Model, Tier(1+j%2), []Component{{Kind: "vae", Hash: "v", Bytes: 10}})
				if r, err := m.Reserve(b, false); err == nil {
					m.FreeBytes()
					r.End(true)
				}
				m.RecordPeak(b, int64(j+1))
				m.Models()
				m.NoteRecovery(Report{Splits: 1})
				m.Collect(func(string, string, string, []string, []string, float64) {})
			}
		}()
	}
	wg.Wait()
	got := map[string]float64{}
	m.Collect(func(name, help, typ string, labels, values []string, v float64) {
		if help == "" || (typ != "gauge" && typ != "counter") || len(labels) != len(values) {
			t.Errorf("%s: bad sample", name)
		}
		key := name
		if len(values) > 1 {
			key += "/" + values[1]
		}
		got[key] = v
	})
	if got["kiln_gpu_memory_reserved_bytes"] != float64(2*gib) || got["kiln_gpu_memory_budget_bytes"] != float64(8*gib) ||
		got["kiln_memory_oom_splits_total"] != 400 || got["kiln_gpu_memory_free_bytes"] <= 0 {
		t.Fatalf("metrics: %v", got)
	}
}

func TestFreeNowAndPeakWrites(t *testing.T) {
	dev := &fakeDevice{st: DeviceStats{Used: 3 * gib}}
	file := filepath.Join(t.TempDir(), "p.json")
	m := newManager(t, Config{Budget: 10 * gib, Device: dev, PeakFile: file})
	m.Place("a", GPU, []Component{{Kind: "unet", Bytes: 2 * gib}})
	if got := m.FreeNow(); got != 7*gib {
		t.Fatalf("free now %d: the allocator's 3 GiB in use count over the ledger's 2", got)
	}
	dev.use(-2 * gib)
	if got := m.FreeNow(); got != 8*gib {
		t.Fatalf("free now %d: the ledger's 2 GiB count over the allocator's 1", got)
	}
	b := Batch{Model: "a", Images: 2, Width: 64, Height: 64}
	m.RecordPeak(b, 100)
	st, _ := os.Stat(file)
	os.Remove(file)
	m.RecordPeak(b, 90) // not larger: no write
	if _, err := os.Stat(file); err == nil || st == nil {
		t.Fatal("a smaller peak rewrote the peak file")
	}
	m.RecordPeak(b, 110)
	if _, err := os.Stat(file); err != nil {
		t.Fatal("a larger peak was not written")
	}
}
