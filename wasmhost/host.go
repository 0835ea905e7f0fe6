// Package wasmhost runs Kiln's WebAssembly policies and nodes on wazero,
// sandboxed: every module is compiled once (optionally cached on disk),
// each tenant gets runtimes of its own, instances are pooled and never
// shared between goroutines, memory is capped in pages, every call has a
// deadline, and the only imports offered are a deterministic subset of
// WASI (no filesystem, network or real clock) and Kiln's host functions
// (rate-limited logging, counters, native image operations).
//
// A guest never takes the server down: a call that traps, times out, runs
// out of memory or answers something the ABI's checks refuse yields the
// built-in native answer instead (see Module.Batching and friends), the
// instance is discarded, repeated failures disable the module with
// exponential backoff, and every outcome is counted in Metrics.
package wasmhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
)

// Kind is the class of a module, which sets its memory cap and deadline.
type Kind int

// Module kinds.
const (
	// KindPolicy modules implement batching, eviction or quality.
	KindPolicy Kind = iota
	// KindNode modules implement node_pre or node_post.
	KindNode
)

// String returns "node" or "policy".
func (k Kind) String() string {
	if k == KindNode {
		return "node"
	}
	return "policy"
}

// Config sets the host's limits. Zero fields take the defaults shown.
type Config struct {
	// CacheDir holds the compiled-module cache; "" keeps it in memory.
	CacheDir string
	// PolicyMemoryPages caps a policy instance's memory (512 = 32 MiB).
	PolicyMemoryPages uint32
	// NodeMemoryPages caps a node instance's memory (4096 = 256 MiB).
	NodeMemoryPages uint32
	// PolicyTimeout is the deadline of one policy call (100 ms).
	PolicyTimeout time.Duration
	// NodeTimeout is the deadline of one node call (5 s).
	NodeTimeout time.Duration
	// InitTimeout is the deadline of instantiating a module, including
	// its reactor initialiser (2 s).
	InitTimeout time.Duration
	// MaxPolicyOutput bounds a policy's encoded answer (1 MiB).
	MaxPolicyOutput int
	// MaxNodePixels bounds the images a node may return (16 Mpx).
	MaxNodePixels uint64
	// MaxIdle is the number of idle instances kept per module (4).
	MaxIdle int
	// MaxInstances bounds the instances of one module in use at once (32);
	// a call that cannot get one within its deadline falls back ("busy").
	MaxInstances int
	// FailureThreshold consecutive failures disable a module (3).
	FailureThreshold int
	// BackoffBase is the first disable period (1 s); it doubles on every
	// failure after re-enabling, up to BackoffMax (5 min).
	BackoffBase time.Duration
	// BackoffMax bounds the disable period.
	BackoffMax time.Duration
	// LogPerSecond and LogBurst rate-limit each module's log lines (10, 20).
	LogPerSecond float64
	LogBurst     int
	// Structure bounds an untrusted module's structure, checked before it
	// is compiled (see StructureLimits).
	Structure StructureLimits
	// CompileTimeout bounds the wait for one compilation (60 s); past it
	// the module is refused.
	CompileTimeout time.Duration
	// Gate bounds concurrent compilations; share one between hosts (nil: a
	// gate of 2 of this host's own).
	Gate *CompileGate
	// Logger receives guest logs and host warnings (slog.Default()).
	Logger *slog.Logger
	// Now is the host's clock for backoff and rate limits (time.Now).
	// Guests never see it.
	Now func() time.Time
	// Natives are the native defaults the hooks fall back to (zero:
	// the zero decisions; see Natives).
	Natives Natives
}

func (c Config) withDefaults() Config {
	if c.PolicyMemoryPages == 0 {
		c.PolicyMemoryPages = 512
	}
	if c.NodeMemoryPages == 0 {
		c.NodeMemoryPages = 4096
	}
	if c.PolicyTimeout == 0 {
		c.PolicyTimeout = 100 * time.Millisecond
	}
	if c.NodeTimeout == 0 {
		c.NodeTimeout = 5 * time.Second
	}
	if c.InitTimeout == 0 {
		c.InitTimeout = 2 * time.Second
	}
	if c.MaxPolicyOutput == 0 {
		c.MaxPolicyOutput = 1 << 20
	}
	if c.MaxNodePixels == 0 {
		c.MaxNodePixels = MaxHostImagePixels
	}
	if c.MaxIdle == 0 {
		c.MaxIdle = 4
	}
	if c.MaxInstances == 0 {
		c.MaxInstances = 32
	}
	if c.FailureThreshold == 0 {
		c.FailureThreshold = 3
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = time.Second
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 5 * time.Minute
	}
	if c.LogPerSecond == 0 {
		c.LogPerSecond = 10
	}
	if c.LogBurst == 0 {
		c.LogBurst = 20
	}
	if c.CompileTimeout == 0 {
		c.CompileTimeout = time.Minute
	}
	if c.Gate == nil {
		c.Gate = NewCompileGate(2)
	}
	c.Structure = c.Structure.withDefaults()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Host owns the compilation cache, the per-tenant runtimes and the metrics.
// It is safe for concurrent use.
type Host struct {
	cfg     Config
	cache   wazero.CompilationCache
	metrics *Metrics
	gate    *CompileGate

	mu       sync.Mutex
	runtimes map[runtimeKey]*runtime
	closed   bool
	// compiling counts compilers still running, abandoned ones included:
	// Close waits for them, since closing a runtime under a running
	// compiler crashes wazero.
	compiling sync.WaitGroup
}

type runtimeKey struct {
	tenant  string
	kind    Kind
	trusted bool
}

// runtime is one wazero runtime: a tenant's sandbox for one kind of module.
type runtime struct {
	rt      wazero.Runtime
	pages   uint32
	trusted bool
}

// New returns a host with cfg's limits.
func New(ctx context.Context, cfg Config) (*Host, error) {
	cfg = cfg.withDefaults()
	var cache wazero.CompilationCache
	if cfg.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasmhost: compilation cache %s: %w", cfg.CacheDir, err)
		}
		cache = c
	} else {
		cache = wazero.NewCompilationCache()
	}
	return &Host{cfg: cfg, cache: cache, metrics: newMetrics(), gate: cfg.Gate, runtimes: map[runtimeKey]*runtime{}}, nil
}

// Config returns the host's effective configuration.
func (h *Host) Config() Config { return h.cfg }

// Metrics returns the host's counters.
func (h *Host) Metrics() *Metrics { return h.metrics }

// ErrClosed is returned for operations on a closed host or module.
var ErrClosed = errors.New("wasmhost: closed")

// runtimeFor returns the runtime of tenant for kind, creating it (with the
// host modules instantiated) on first use. Trusted runtimes compile code
// without wazero's deadline checks (see Spec.Trusted).
func (h *Host) runtimeFor(ctx context.Context, tenant string, kind Kind, trusted bool) (*runtime, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	key := runtimeKey{tenant, kind, trusted}
	if r, ok := h.runtimes[key]; ok {
		return r, nil
	}
	pages := h.cfg.PolicyMemoryPages
	if kind == KindNode {
		pages = h.cfg.NodeMemoryPages
	}
	rc := wazero.NewRuntimeConfig().
		WithCloseOnContextDone(!trusted).
		WithMemoryLimitPages(pages).
		WithCompilationCache(h.cache).
		WithDebugInfoEnabled(false)
	rt := wazero.NewRuntimeWithConfig(ctx, rc)
	if err := instantiateWASI(ctx, rt); err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("wasmhost: tenant %q: %w", tenant, err)
	}
	if err := instantiateKiln(ctx, rt, h); err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("wasmhost: tenant %q: %w", tenant, err)
	}
	r := &runtime{rt: rt, pages: pages, trusted: trusted}
	h.runtimes[key] = r
	return r, nil
}

// Close closes every runtime (and so every module and instance) and the
// compilation cache.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	rts := h.runtimes
	h.runtimes = map[runtimeKey]*runtime{}
	h.closed = true
	h.mu.Unlock()
	h.compiling.Wait()
	var errs []error
	for _, r := range rts {
		errs = append(errs, r.rt.Close(ctx))
	}
	errs = append(errs, h.cache.Close(ctx))
	return errors.Join(errs...)
}
