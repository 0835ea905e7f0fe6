package wasmadapter

import (
	"context"
	"time"

	"github.com/kiln-project/kiln/core/memory"
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
	// Memory, when set, is the device's memory manager: the policy gets
	// the ABI minor-3 figures (host budget, each model's unique bytes)
	// along with the cache's offload and restore times and queued jobs,
	// and HostFree defaults to the manager's free host memory.
	Memory *memory.Manager
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
	hostFree := e.HostFree
	if hostFree == nil && e.Memory != nil {
		hostFree = e.Memory.HostFreeBytes
	}
	if hostFree != nil {
		if f := hostFree(); f > 0 {
			in.HostFreeBytes = uint64(f)
		}
	}
	if len(resident) > abi.MaxModels {
		resident = resident[:abi.MaxModels]
	}
	for _, r := range resident {
		in.UsedBytes += uint64(max(r.Bytes, 0))
		m := abi.Model{ID: r.ID, Bytes: uint64(max(r.Bytes, 0)), LastUseUS: r.LastUse.UnixMicro(),
			Uses: uint64(max(r.Uses, 0)), LoadUS: uint64(max(r.LoadTime.Microseconds(), 0)), Pinned: r.Pinned, InUse: r.InUse}
		if e.Memory != nil {
			m.UniqueBytes = m.Bytes
			if u, ok := e.Memory.UniqueBytes(r.ID); ok {
				m.UniqueBytes = min(m.Bytes, uint64(max(u, 0)))
			}
			m.OffloadUS = uint64(max(r.OffloadTime.Microseconds(), 0))
			m.RestoreUS = uint64(max(r.RestoreTime.Microseconds(), 0))
			m.Queued = uint32(min(max(r.Queued, 0), 1<<31))
		}
		in.Models = append(in.Models, m)
	}
	if e.Memory != nil {
		in.Tiers = true
		in.HostBudgetBytes = uint64(max(e.Memory.HostBudget(), 0))
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
