package app

import (
	"context"
	"fmt"

	"github.com/kiln-project/kiln/app/wasmadapter"
	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/server/metrics"
	"github.com/kiln-project/kiln/worker"
)

// startWasm starts the process's Wasm host and module registry (modules in
// the JetStream object store, compiled code cached under the data
// directory) and fills the hooks the options leave empty: the quality
// policy, the eviction policy, post-processing, pre-processing nodes and
// the upload API. The built-in policies and nodes are Wasm modules, so the
// default path runs through the ABI. Its metrics join /metrics.
func (in *Instance) startWasm(ctx context.Context, o *Options, reg *metrics.Registry) error {
	if o.NoWasm {
		return nil
	}
	w, err := wasmadapter.Start(ctx, wasmadapter.Options{JS: in.broker.JS, DataDir: in.cfg.DataDir, Logger: in.log})
	if err != nil {
		return fmt.Errorf("serve: wasm: %w", err)
	}
	in.wasm = w
	reg.CollectText(w.WriteMetrics)
	if o.Quality == nil {
		o.Quality = w.Quality()
	}
	if o.Eviction == nil {
		o.Eviction = w.Eviction()
	}
	if o.Post == nil {
		o.Post = w.Post
	}
	if o.Wasm == nil {
		o.Wasm = w
	}
	return nil
}

// wasmScheduler returns the workers' scheduler and window: s when the
// options give one (window 1), otherwise the batching policy with a window
// of the hardware profile's max_batch, so the policy chooses among that
// many held jobs.
func (in *Instance) wasmScheduler(s worker.Scheduler, maxBatch int, mem *memory.Manager) (worker.Scheduler, int) {
	if s != nil || in.wasm == nil {
		return s, 1
	}
	maxBatch = max(maxBatch, 1)
	return in.wasm.Scheduler(wasmadapter.SchedulerOptions{MaxBatch: maxBatch, Memory: mem}), maxBatch
}

// stopWasm closes the Wasm host once the workers and gateway are done.
func (in *Instance) stopWasm(ctx context.Context) {
	if in.wasm != nil {
		if err := in.wasm.Close(ctx); err != nil {
			in.log.Warn("closing the wasm host", "err", err)
		}
	}
}
