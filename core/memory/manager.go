// Package memory is the per-device memory manager. It owns one device's
// budget and answers, for the batcher, whether a batch can run now and how
// many bytes are free. It knows what the resident models cost on each tier
// (GPU, pinned host memory; disk is the memory-mapped checkpoint and costs
// nothing), counting components shared by content hash once, and the
// activation peak of each (model, batch, resolution) measured on the device
// once and cached on disk. Out-of-memory failures go through Split, which
// splits a batch and retries before anything fails.
//
// The manager holds no device handle of its own: a Device (the CUDA
// backend's caching allocator) feeds it used, reserved and peak bytes, and
// the model cache reports residency through Place and Remove.
package memory

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// DeviceStats are one device's memory figures, from its caching allocator.
type DeviceStats struct {
	// Total is the device's memory.
	Total int64
	// Used is the bytes handed out (weights, activations, graph arenas).
	Used int64
	// Reserved is Used plus the bytes the allocator keeps cached for reuse.
	Reserved int64
	// Peak is the high-water mark of Used since the last ResetPeak.
	Peak int64
	// Weights is the bytes of uploaded weights (included in Used).
	Weights int64
}

// Device is the memory view of one device. Its methods are called only by
// the manager's owner between batches (Trim) or around one batch (Stats,
// ResetPeak), never concurrently with other work on the device unless the
// implementation says it is safe.
type Device interface {
	// MemStats returns the current figures; it must be safe to call from
	// any goroutine (metrics scrapes call it).
	MemStats() DeviceStats
	// ResetPeak starts a new peak measurement.
	ResetPeak()
	// Trim returns cached free memory to the driver.
	Trim() error
}

// Config configures a Manager.
type Config struct {
	// Name names the device ("cuda:0", "cpu") in metrics and the peak file.
	Name string
	// Budget is the device bytes Kiln may use (weights and activations);
	// it must be positive.
	Budget int64
	// HostBudget is the pinned host memory offloaded models may hold; 0
	// means none (evicted models are dropped to disk).
	HostBudget int64
	// PeakFile caches measured activation peaks across restarts; "" keeps
	// them in memory only.
	PeakFile string
	// DefaultBytesPerPixel estimates the activation bytes per output pixel
	// and image of a model with no measurement yet (0: 4096, conservative
	// for an fp16 SD-class UNet with flash attention).
	DefaultBytesPerPixel int64
	// Device feeds allocator figures; nil for a device without one (CPU).
	Device Device
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Batch is work to fit on the device: Images images of Width×Height
// through one model.
type Batch struct {
	Model         string
	Images        int
	Width, Height int
}

func (b Batch) pixels() int64 { return int64(b.Images) * int64(b.Width) * int64(b.Height) }

// Decision answers CanRun.
type Decision struct {
	// OK reports whether the batch fits now.
	OK bool
	// Need is the activation bytes the batch is expected to take.
	Need int64
	// Free is the bytes free for activations now (budget minus resident
	// weights minus running batches' reservations).
	Free int64
	// Measured reports whether Need comes from a measurement of this exact
	// (model, images, size) rather than an estimate.
	Measured bool
	// MaxImages is the most images of this model and size that fit now
	// (0 when not even one does).
	MaxImages int
	// Reason says why not, in words, when OK is false.
	Reason string
}

// Manager is one device's memory manager. It is safe for concurrent use.
type Manager struct {
	cfg Config

	mu       sync.Mutex
	peaks    *peakStore
	ledger   *ledger
	reserved int64 // activation bytes of running batches
	running  int
	lastBusy time.Time
	stats    counters
}

type counters struct {
	oomSplits, oomRetries, oomFailures, trims int64
}

// ErrBudget reports a budget that cannot hold the work even alone.
var ErrBudget = errors.New("memory: does not fit the memory budget")

// New returns a manager. A corrupt or foreign peak file is ignored (the
// peaks are measured again), never fatal.
func New(cfg Config) (*Manager, error) {
	if cfg.Budget <= 0 {
		return nil, fmt.Errorf("memory: %s: budget must be positive, got %d", cfg.Name, cfg.Budget)
	}
	if cfg.HostBudget < 0 {
		return nil, fmt.Errorf("memory: %s: host budget must not be negative, got %d", cfg.Name, cfg.HostBudget)
	}
	if cfg.DefaultBytesPerPixel <= 0 {
		cfg.DefaultBytesPerPixel = 4096
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Manager{cfg: cfg, ledger: newLedger(), peaks: loadPeaks(cfg.PeakFile, cfg.Name)}
	m.peaks.snap = func() []peakEntry {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.peaks.entries()
	}
	m.lastBusy = cfg.Now()
	return m, nil
}

// Name returns the device's name.
func (m *Manager) Name() string { return m.cfg.Name }

// Budget returns the device budget in bytes.
func (m *Manager) Budget() int64 { return m.cfg.Budget }

// HostBudget returns the pinned host memory budget in bytes.
func (m *Manager) HostBudget() int64 { return m.cfg.HostBudget }

// FreeBytes is the device memory free for new work: the budget minus the
// weights resident on the device (shared components counted once) minus
// the activations reserved by running batches. It fills the Wasm batching
// policy's FreeMemBytes.
func (m *Manager) FreeBytes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.freeLocked()
}

func (m *Manager) freeLocked() int64 {
	return max(0, m.cfg.Budget-m.ledger.tierBytes(GPU)-m.reserved)
}

// HostFreeBytes is the pinned host memory free for offloaded models.
func (m *Manager) HostFreeBytes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return max(0, m.cfg.HostBudget-m.ledger.tierBytes(Host))
}

// ActivationBytes is the activation peak b is expected to need, and
// whether it was measured for exactly this batch.
func (m *Manager) ActivationBytes(b Batch) (int64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.needLocked(b)
}

// needLocked looks the batch up, else scales the closest measurement of
// the same model by pixels (activations grow linearly in images × pixels
// with flash attention), else applies the default bytes per pixel.
func (m *Manager) needLocked(b Batch) (int64, bool) {
	if b.Images <= 0 || b.Width <= 0 || b.Height <= 0 {
		return 0, false
	}
	if v, ok := m.peaks.get(b); ok {
		return v, true
	}
	if ref, v, ok := m.peaks.closest(b); ok {
		// Round up so an estimate never undercuts the measurement it scales.
		num := v * b.pixels()
		den := ref.pixels()
		return (num + den - 1) / den, false
	}
	return b.pixels() * m.cfg.DefaultBytesPerPixel, false
}

// CanRun says whether b fits next to the resident weights and the batches
// already running. The model's own weights must be placed (Place) first;
// when they are not, their size is unknown here and not counted.
func (m *Manager) CanRun(b Batch) Decision {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.decideLocked(b)
}

func (m *Manager) decideLocked(b Batch) Decision {
	need, measured := m.needLocked(b)
	free := m.freeLocked()
	d := Decision{Need: need, Free: free, Measured: measured, OK: need <= free}
	one := b
	one.Images = 1
	if per, _ := m.needLocked(one); per > 0 {
		d.MaxImages = int(min(free/per, 1<<20))
		if d.MaxImages >= b.Images && !d.OK {
			d.MaxImages = b.Images - 1
		}
	}
	if !d.OK {
		d.Reason = fmt.Sprintf("%s: %d image(s) of %d×%d on %s need %s of activations, %s free (budget %s, weights %s, running %s)",
			m.cfg.Name, b.Images, b.Width, b.Height, b.Model, human(need), human(free), human(m.cfg.Budget),
			human(m.ledger.tierBytes(GPU)), human(m.reserved))
	}
	return d
}

// Run is a reservation of activation memory for a running batch.
type Run struct {
	m     *Manager
	b     Batch
	need  int64
	base  int64 // device bytes used when the run began
	once  sync.Once
	track bool
}

// Reserve books b's activation bytes until the returned Run ends, so that
// FreeBytes and CanRun see them. It fails with ErrBudget when b cannot fit
// even with nothing else running. measure asks for the device's peak to be
// recorded for b when the run ends (only one batch may run on the device
// at a time then, or the peak mixes them).
func (m *Manager) Reserve(b Batch, measure bool) (*Run, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	need, _ := m.needLocked(b)
	if room := m.cfg.Budget - m.ledger.tierBytes(GPU); need > room {
		return nil, fmt.Errorf("%w: %s", ErrBudget, m.decideLocked(b).Reason)
	}
	r := &Run{m: m, b: b, need: need, track: measure && m.cfg.Device != nil}
	if r.track {
		m.cfg.Device.ResetPeak()
		r.base = m.cfg.Device.MemStats().Used
	}
	m.reserved += need
	m.running++
	return r, nil
}

// End releases the reservation. When the run succeeded and was measured,
// the device's peak above the bytes in use at the start becomes the
// batch's measured activation peak (kept as the largest seen, and written
// to the peak file).
func (r *Run) End(ok bool) error {
	var err error
	r.once.Do(func() {
		m := r.m
		var peak int64
		if r.track && ok {
			peak = m.cfg.Device.MemStats().Peak - r.base
		}
		m.mu.Lock()
		m.reserved -= r.need
		m.running--
		m.lastBusy = m.cfg.Now()
		grew := peak > 0 && m.peaks.put(r.b, peak)
		m.mu.Unlock()
		if grew {
			err = m.peaks.save()
		}
	})
	return err
}

// RecordPeak stores a measured activation peak for b (the largest seen
// wins) and writes the peak file when it grew (cheap to call every step).
func (m *Manager) RecordPeak(b Batch, bytes int64) error {
	if bytes <= 0 || b.Images <= 0 {
		return nil
	}
	m.mu.Lock()
	grew := m.peaks.put(b, bytes)
	m.lastBusy = m.cfg.Now()
	m.mu.Unlock()
	if !grew {
		return nil
	}
	return m.peaks.save()
}

// FreeNow is the device memory free for activations now: the budget less
// what is in use, taking the larger of the ledger (resident weights and
// reservations) and the allocator's figure (which also sees graph arenas
// and live activations).
func (m *Manager) FreeNow() int64 {
	m.mu.Lock()
	used := m.ledger.tierBytes(GPU) + m.reserved
	m.mu.Unlock()
	if m.cfg.Device != nil {
		used = max(used, m.cfg.Device.MemStats().Used)
	}
	return max(0, m.cfg.Budget-used)
}

// TrimIfIdle returns the device allocator's cached memory to the driver
// when no batch has run for idle; it reports whether it trimmed. Call it
// from the goroutine that owns the device.
func (m *Manager) TrimIfIdle(idle time.Duration) (bool, error) {
	m.mu.Lock()
	ok := m.running == 0 && m.cfg.Now().Sub(m.lastBusy) >= idle && m.cfg.Device != nil
	if ok {
		st := m.cfg.Device.MemStats()
		ok = st.Reserved > st.Used
	}
	if ok {
		m.stats.trims++
		m.lastBusy = m.cfg.Now() // trimmed: wait another idle period
	}
	m.mu.Unlock()
	if !ok {
		return false, nil
	}
	if err := m.cfg.Device.Trim(); err != nil {
		return true, fmt.Errorf("memory: %s: trim: %w", m.cfg.Name, err)
	}
	return true, nil
}

// human writes a byte count in binary units.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit && exp < 4; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
