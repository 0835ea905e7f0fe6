package wasmadapter

import (
	"context"
	"time"

	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/kiln-project/kiln/worker/modelcache"
)

// Eviction is the model cache's Policy asking the eviction policy (the
// operator's active module, or the built-in size-aware LRU).
type Eviction struct {
	w *Wasm
	// HostFree returns the host memory free for offloaded models (nil: 0,
	// so models are dropped rather than offloaded).
	HostFree func() int64
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Eviction returns an eviction adapter.
func (w *Wasm) Eviction() *Eviction { return &Eviction{w: w, Now: time.Now} }

// Victims implements modelcache.Policy.
func (e *Eviction) Victims(needed, free int64, resident []modelcache.Info) ([]modelcache.Victim, error) {
	in := &abi.EvictionInput{NowUS: e.Now().UnixMicro()}
	if needed > free {
		in.NeededBytes = uint64(needed - free)
	}
	if e.HostFree != nil {
		if f := e.HostFree(); f > 0 {
			in.HostFreeBytes = uint64(f)
		}
	}
	if len(resident) > abi.MaxModels {
		resident = resident[:abi.MaxModels]
	}
	for _, r := range resident {
		in.UsedBytes += uint64(max(r.Bytes, 0))
		in.Models = append(in.Models, abi.Model{ID: r.ID, Bytes: uint64(max(r.Bytes, 0)), LastUseUS: r.LastUse.UnixMicro(),
			Uses: uint64(max(r.Uses, 0)), LoadUS: uint64(max(r.LoadTime.Microseconds(), 0)), Pinned: r.Pinned, InUse: r.InUse})
	}
	in.BudgetBytes = in.UsedBytes + uint64(max(free, 0))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	out, _ := e.w.Registry.Eviction(ctx, in)
	victims := make([]modelcache.Victim, 0, len(out.Victims))
	for _, v := range out.Victims {
		a := modelcache.Drop
		if v.Offload {
			a = modelcache.Offload
		}
		victims = append(victims, modelcache.Victim{ID: resident[v.Index].ID, Action: a})
	}
	return victims, nil
}
