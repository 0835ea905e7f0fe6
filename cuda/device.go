package cuda

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-project/kiln/cuda/internal/cu"
)

// Options configure a device.
type Options struct {
	// Graphs captures repeated segments (a UNet step) as CUDA graphs and
	// replays them (default on; KILN_CUDA_GRAPHS=0 turns it off).
	Graphs bool
	// MaxGraphs bounds the captured graphs kept per device.
	MaxGraphs int
	// Conv picks the convolution algorithm: "auto", "implicit" (Kiln's
	// implicit-GEMM kernel), "im2col" (patch matrix + cuBLAS).
	Conv string
	// Attention picks "auto", "flash" (fused kernel) or "gemm" (cuBLAS
	// products with a softmax between, chunked over queries).
	Attention string
	// Linear picks "auto", "cublas" or "implicit" for matrix products with
	// weights.
	Linear string
	// SM90A loads the Hopper image (wgmma attention, kernels/sm90a) on
	// sm_90 devices (default on; KILN_CUDA_SM90A=0 turns it off).
	SM90A bool
	// SM90AImage, when set, names a Hopper image file to load instead of
	// the built-in one (KILN_CUDA_SM90A_IMAGE; for testing a fresh build).
	SM90AImage string
	// GroupNorm picks "auto" (one pass through shared memory where the
	// groups fit, else three passes) or "3pass" (KILN_CUDA_GROUPNORM).
	GroupNorm string
	// ConvTile forces the implicit-GEMM tile ("128x128", "128x64",
	// "64x64"); "" chooses by shape.
	ConvTile string
	// ScoreBytes bounds the score memory of the unfused attention path.
	ScoreBytes int64
	// Speculate launches a captured graph as soon as the recording has
	// matched it up to its last upload, overlapping the host's recording of
	// the rest with the device's work (default on; KILN_CUDA_SPECULATE=0).
	Speculate bool
	// Fuse folds residual additions into the kernel that makes one operand
	// (default on; KILN_CUDA_FUSE=0 turns it off).
	Fuse bool
	// Precision "fp8" runs the large matrix products of linear layers and
	// 1×1 convolutions in E4M3 with per-tensor scales where the device
	// supports it (sm_90 with the Hopper image); "" or "fp16" keeps them in
	// the activation dtype (KILN_CUDA_PRECISION).
	Precision string
	// Poison fills all activation memory with 0xff bytes (NaN in every
	// float type) before each segment runs, so that tests catch outputs a
	// kernel failed to write.
	Poison bool
}

// DefaultOptions returns the defaults, adjusted by KILN_CUDA_* environment
// variables (KILN_CUDA_GRAPHS=0, KILN_CUDA_CONV, KILN_CUDA_ATTENTION,
// KILN_CUDA_LINEAR).
func DefaultOptions() Options {
	o := Options{Graphs: true, SM90A: true, Fuse: true, Speculate: true, MaxGraphs: 16, Conv: "auto", Attention: "auto", Linear: "auto", GroupNorm: "auto", ScoreBytes: 256 << 20}
	o.fromEnv(getenv)
	return o
}

// Info describes a CUDA device.
type Info struct {
	Ordinal      int
	Name         string
	Major, Minor int   // compute capability
	SMs          int   // multiprocessors
	Memory       int64 // bytes
	L2           int   // bytes
	MaxSharedOpt int   // opt-in shared memory per block
	Driver       int   // CUDA driver version, 1000·major + 10·minor
	DriverPath   string
	CuBLAS       string // path of the cuBLAS library
	CuBLASMajor  int
}

// Stats counts a device's work and memory.
type Stats struct {
	Flushes       int           // segments run
	Transient     int           // segments run directly
	Captured      int           // segments captured as graphs
	Replayed      int           // graph replays
	Fused         int           // residual additions folded into other kernels
	Speculated    int           // graphs launched before their segment was fully recorded
	Misspeculated int           // such launches whose segment then differed
	Graphs        int           // graphs held now
	HostFlushTime time.Duration // host time spent planning and issuing
	InUse         int64         // device bytes held (weights, activations, graph arenas)
	Peak          int64         // high-water mark of InUse since ResetPeak
	Cached        int64         // bytes kept for reuse
	Weights       int64         // bytes of uploaded weights
}

// Device is one GPU: its engine (driven from one locked OS thread), the
// caching allocator, the segment being recorded and the graph cache. Views
// (Backend values) of a device share all of it; like a Backend it is not
// safe for concurrent use.
type Device struct {
	info Info
	opts Options
	eng  engine
	w    *worker

	alloc   *allocator
	seg     *segment
	graphs  map[string]*graphEntry
	byFirst map[string]*graphEntry // by the encoding of their first record
	spec    *speculation
	seen    map[uint64]int
	clock   uint64
	broken  error
	kargs   []karg
	stats   Stats

	profiling bool
	profile   map[string]*OpTime

	tune     bool // measure algorithm choices on first use (real devices)
	scratch  bool // recording a candidate for measurement
	convPick map[convKey]convPlan
	linPick  map[linKey]linPlan
	attnPick map[attnKey]attnPlan
	fhLayout int   // descriptor convention the Hopper attention verified with; -1 unknown, fhBroken none
	fp8      int8  // fp8 products: 0 not yet known, 1 usable, -1 not
	fp8Min   int64 // fewest multiply-adds an fp8 product needs (fp8MinWork)
	q8seg    *segment
	q8memo   map[*buffer]q8Memo // activations quantised in segment q8seg
	sm90a    string             // what became of the Hopper image (kiln doctor)
	tuneLog  []string
	later    *tuneQueue // shapes whose tuning is deferred (see DeferTuning)

	deferred []*buffer // freed while read by the unflushed segment

	cleanMu sync.Mutex
	cleanQ  []*storage // handles the GC found unreachable and unfreed

	wt         *weightTable // uploaded weights: sharing by content, offload
	memWeights atomic.Int64 // Stats.Weights, readable from any goroutine

	closed bool
}

// worker runs functions on one OS thread, locked for its lifetime, which is
// what a CUDA context requires.
type worker struct {
	ch chan func()
}

func newWorker() *worker {
	w := &worker{ch: make(chan func())}
	go func() {
		runtime.LockOSThread()
		for f := range w.ch {
			f()
		}
	}()
	return w
}

// do runs f on the worker and waits for it. A panic inside f is returned as
// an error rather than crashing the worker.
func (w *worker) do(f func() error) (err error) {
	done := make(chan error, 1)
	w.ch <- func() {
		defer func() {
			if r := recover(); r != nil {
				if e, ok := r.(error); ok {
					done <- e
					return
				}
				done <- fmt.Errorf("cuda: panic on the device thread: %v", r)
			}
		}()
		done <- f()
	}
	return <-done
}

func (w *worker) stop() { close(w.ch) }

// newDevice wraps an engine; the caller has run its setup on w.
func newDevice(info Info, opts Options, eng engine, w *worker) *Device {
	d := &Device{info: info, opts: opts, eng: eng, w: w, seg: &segment{},
		graphs: make(map[string]*graphEntry), byFirst: make(map[string]*graphEntry), seen: make(map[uint64]int),
		convPick: make(map[convKey]convPlan), linPick: make(map[linKey]linPlan), attnPick: make(map[attnKey]attnPlan), fhLayout: -1, fp8Min: fp8MinWork}
	if d.opts.MaxGraphs < 1 {
		d.opts.MaxGraphs = 1
	}
	if d.opts.ScoreBytes < 1<<20 {
		d.opts.ScoreBytes = 1 << 20
	}
	d.alloc = newAllocator(eng)
	d.wt = &weightTable{byKey: map[weightKey]*buffer{}, state: map[*buffer]*wstate{}}
	d.alloc.gcHook = func() {
		for len(d.graphs) > 0 {
			d.evictOldestGraph()
		}
		runtime.GC()
		time.Sleep(20 * time.Millisecond) // cleanups run on their own goroutine
		d.drainCleanups()
	}
	return d
}

// submit queues f on the device thread without waiting; *errp receives its
// error, which the next run call (FIFO behind it) can read.
func (d *Device) submit(f func() error, errp *error) {
	if d.w == nil {
		*errp = f()
		return
	}
	d.w.ch <- func() {
		defer func() {
			if r := recover(); r != nil {
				*errp = fmt.Errorf("cuda: panic on the device thread: %v", r)
			}
		}()
		*errp = f()
	}
}

// run executes f on the device thread.
func (d *Device) run(f func() error) error {
	if d.closed {
		return errors.New("cuda: device closed")
	}
	if d.w == nil {
		return f()
	}
	return d.w.do(f)
}

// Info describes the device.
func (d *Device) Info() Info { return d.info }

// Stats returns counters and memory use.
func (d *Device) Stats() Stats {
	s := d.stats
	s.Graphs = len(d.graphs)
	s.InUse = d.alloc.inUse
	s.Peak = d.alloc.peak
	s.Cached = d.alloc.cached
	return s
}

// ResetPeak starts a new peak-memory measurement (e.g. per job).
func (d *Device) ResetPeak() {
	d.alloc.peak = d.alloc.inUse
	d.alloc.publish()
}

// Sync runs everything recorded and waits for the device.
func (d *Device) Sync() error {
	return d.run(func() error {
		if err := d.flush(); err != nil {
			return err
		}
		return d.noteErr(d.eng.sync())
	})
}

// ReleaseGraphs drops every captured graph and the cached free memory.
func (d *Device) ReleaseGraphs() error {
	return d.run(func() error {
		for len(d.graphs) > 0 {
			d.evictOldestGraph()
		}
		d.alloc.trim()
		return nil
	})
}

// Close releases the device. Tensors of it must not be used afterwards.
func (d *Device) Close() error {
	if d.closed {
		return nil
	}
	err := d.run(func() error {
		for len(d.graphs) > 0 {
			d.evictOldestGraph()
		}
		d.alloc.trim()
		d.dropSpares()
		d.eng.close()
		return nil
	})
	d.closed = true
	if d.w != nil {
		d.w.stop()
	}
	return err
}

// noteErr records errors that leave the CUDA context unusable.
func (d *Device) noteErr(err error) error {
	if err == nil {
		return nil
	}
	var ce *cu.Error
	if errors.As(err, &ce) && sticky(ce.Code) && d.broken == nil {
		d.broken = fmt.Errorf("cuda: device %d unusable after %w", d.info.Ordinal, err)
	}
	return err
}

// sticky reports whether a CUresult corrupts the context for good.
func sticky(code int) bool {
	return code == 214 || (code >= 700 && code <= 720) || code == 999
}

// trackOwned notes a buffer with its own block (for nothing but accounting now).
func (d *Device) trackOwned(b *buffer) {}

// releaseBuffer gives an owned block back to the allocator, or defers that
// until the unflushed segment that reads it has run.
func (d *Device) releaseBuffer(b *buffer) {
	if b.weight {
		d.forgetWeight(b)
	}
	if !b.own {
		return
	}
	if b.lastRead == d.seg && len(d.seg.recs) > 0 {
		d.deferred = append(d.deferred, b)
		return
	}
	d.alloc.release(b.addr, b.ownSize)
	if b.weight {
		d.addWeights(-b.size)
	}
	b.own = false
	for _, c := range b.alt {
		d.releaseBuffer(c)
	}
	b.alt = nil
	if b.q8 != nil {
		d.releaseBuffer(b.q8)
		b.q8 = nil
	}
}

func (d *Device) releaseDeferred() {
	l := d.deferred
	d.deferred = nil
	for _, b := range l {
		if b.own {
			d.alloc.release(b.addr, b.ownSize)
			if b.weight {
				d.addWeights(-b.size)
			}
			b.own = false
		}
	}
}

// enqueueCleanup is called by the garbage collector (on its own goroutine)
// for a tensor handle that became unreachable.
func (d *Device) enqueueCleanup(s *storage) {
	d.cleanMu.Lock()
	d.cleanQ = append(d.cleanQ, s)
	d.cleanMu.Unlock()
}

// drainCleanups drops the references of handles the GC collected unfreed.
func (d *Device) drainCleanups() {
	d.cleanMu.Lock()
	q := d.cleanQ
	d.cleanQ = nil
	d.cleanMu.Unlock()
	for _, s := range q {
		d.dropRef(s)
	}
}

// dropRef releases one handle's reference to its buffer.
func (d *Device) dropRef(s *storage) {
	if s.freed {
		return
	}
	s.freed = true
	b := s.buf
	b.refs--
	if b.refs > 0 {
		return
	}
	if b.seg != nil {
		return // planned with the segment
	}
	if b.dead == nil {
		b.dead = errFreed
	}
	d.releaseBuffer(b)
}
