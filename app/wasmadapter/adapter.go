// Package wasmadapter plugs Kiln's Wasm registry into the serving layer: it
// implements the worker's Scheduler (batching policy), the model cache's
// eviction Policy, the gateway's QualityPolicy, the worker's
// PostProcessor (post-processing node chains on a CPU pool) and the
// gateway's pre-processing nodes and upload API (/v1/policies,
// /v1/nodes), and renders the Wasm metrics. app.Start builds one Wasm
// per process with Start.
package wasmadapter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-project/kiln/wasmhost"
	"github.com/kiln-project/kiln/wasmhost/conformance"
	"github.com/kiln-project/kiln/wasmhost/registry"
)

// Options configure Start.
type Options struct {
	// JS holds modules in the registry's object store bucket; without it
	// modules live under DataDir/wasm/modules (one process only).
	JS jetstream.JetStream
	// DataDir holds the compilation cache (DataDir/wasm/cache); "" keeps
	// compiled code in memory.
	DataDir string
	// Replicas of the module bucket (≤ 1: one copy).
	Replicas int
	// Host overrides the Wasm host's limits (its CacheDir and Logger are
	// filled in when empty; its Natives are always Kiln's, see Natives).
	Host wasmhost.Config
	// Logger receives Wasm events.
	Logger *slog.Logger
	// PostWorkers bounds the post-processing pool (GOMAXPROCS).
	PostWorkers int
	// Budgets bound the upload dry run (conformance defaults).
	Budgets conformance.Budgets
}

// Wasm is one process's Wasm runtime, registry and adapters.
type Wasm struct {
	Host     *wasmhost.Host
	Registry *registry.Registry
	log      *slog.Logger
	pool     *registry.Pool
	stop     context.CancelFunc
}

// Start opens the module store and the Wasm host and loads the built-in
// modules.
func Start(ctx context.Context, o Options) (*Wasm, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	cfg := o.Host
	cfg.Natives = Natives()
	if cfg.Logger == nil {
		cfg.Logger = o.Logger
	}
	if cfg.CacheDir == "" && o.DataDir != "" {
		cfg.CacheDir = filepath.Join(o.DataDir, "wasm", "cache")
		if err := os.MkdirAll(cfg.CacheDir, 0o755); err != nil {
			return nil, fmt.Errorf("wasm: %w", err)
		}
	}
	var store registry.Store
	var err error
	switch {
	case o.JS != nil:
		store, err = registry.OpenObjectStore(ctx, o.JS, registry.ModulesBucket, o.Replicas)
	case o.DataDir != "":
		store, err = registry.NewDirStore(filepath.Join(o.DataDir, "wasm", "modules"))
	default:
		store = registry.NewMemStore()
	}
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	h, err := wasmhost.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	bp, bn := Builtins()
	reg, err := registry.New(ctx, registry.Config{Store: store, Host: h, BuiltinPolicies: bp, BuiltinNodes: bn, CacheDir: cfg.CacheDir, Logger: o.Logger, Budgets: o.Budgets})
	if err != nil {
		_ = h.Close(ctx)
		return nil, err
	}
	// Follow activations made by other processes sharing the bucket.
	fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	if err := reg.Follow(fctx); err != nil {
		stop()
		_ = reg.Close(ctx)
		_ = h.Close(ctx)
		return nil, err
	}
	n := o.PostWorkers
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	o.Logger.Info("wasm host ready", "builtins_loaded_in", time.Since(t0).Round(time.Millisecond), "compile_cache", cfg.CacheDir)
	return &Wasm{Host: h, Registry: reg, log: o.Logger, pool: registry.NewPool(n), stop: stop}, nil
}

// Close stops the registry and the host.
func (w *Wasm) Close(ctx context.Context) error {
	w.stop()
	return errors.Join(w.Registry.Close(ctx), w.Host.Close(ctx))
}

// WriteMetrics writes the Wasm metrics in the Prometheus text format
// (kiln_wasm_calls_total{module,hook,result}, the call duration
// histogram, instance and log counters, guest counters).
func (w *Wasm) WriteMetrics(out io.Writer) error { return w.Host.Metrics().WritePrometheus(out) }
