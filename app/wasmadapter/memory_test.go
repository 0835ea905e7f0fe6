package wasmadapter

import (
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/wasmhost"
	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/kiln-project/kiln/worker"
	"github.com/kiln-project/kiln/worker/modelcache"
)

// The memory manager fills the batching input: free bytes and each job's
// activation estimate; the built-in policy then batches only what fits.
func TestSchedulerPassesMemoryToThePolicy(t *testing.T) {
	w := start(t)
	mgr, err := memory.New(memory.Config{Name: "cuda:0", Budget: 3 << 30})
	if err != nil {
		t.Fatal(err)
	}
	// 512×512 images measured at 1 GiB each.
	mgr.RecordPeak(memory.Batch{Model: "m", Images: 1, Width: 512, Height: 512}, 1<<30)
	s := w.Scheduler(SchedulerOptions{MaxBatch: 8, Memory: mgr})
	p := pending(job("a", "t1", jobs.PriorityNormal, 3*time.Second, 512), job("b", "t1", jobs.PriorityNormal, 2*time.Second, 512),
		job("c", "t1", jobs.PriorityNormal, time.Second, 512), job("d", "t1", jobs.PriorityNormal, 0, 512))
	in := s.Input(time.Now(), p, worker.Stats{})
	if in.FreeMemBytes != 3<<30 || in.Jobs[0].MemBytes != 1<<30 {
		t.Fatalf("free %d, job bytes %d", in.FreeMemBytes, in.Jobs[0].MemBytes)
	}
	linear := worker.Stats{StepLatency: []worker.StepLatency{{Images: 1, Latency: time.Millisecond}, {Images: 2, Latency: 2 * time.Millisecond}}}
	d, err := s.Decide(time.Now(), p, linear)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Run) != 3 {
		t.Fatalf("batched %d jobs of 1 GiB into 3 GiB free", len(d.Run))
	}
	// Resident weights leave less room.
	mgr.Place("m", memory.GPU, []memory.Component{{Kind: "unet", Bytes: 2 << 30}})
	if d, _ = s.Decide(time.Now(), p, linear); len(d.Run) != 1 {
		t.Fatalf("batched %d jobs with 1 GiB free", len(d.Run))
	}
}

// With the memory manager the eviction policy sees each model's unique
// bytes (ABI minor 3): evicting a model whose components another resident
// model shares frees little, so the built-in policy picks one that frees
// enough.
func TestEvictionSeesUniqueBytes(t *testing.T) {
	w := start(t)
	mgr, err := memory.New(memory.Config{Name: "cuda:0", Budget: 10 << 30, HostBudget: 1})
	if err != nil {
		t.Fatal(err)
	}
	ev := w.Eviction()
	ev.Memory = mgr
	cache := modelcache.New(10<<30, ev)
	cache.SetMeter(func() int64 { return mgr.TierBytes(memory.GPU) })
	shared := memory.Component{Kind: "vae", Hash: "shared", Bytes: 5 << 29}
	comps := map[string][]memory.Component{
		"ft-old": {shared, {Kind: "unet", Hash: "a", Bytes: 1 << 29}}, // 3 GiB, 0.5 GiB its own
		"other":  {{Kind: "unet", Hash: "b", Bytes: 2 << 30}},
		"ft-new": {shared, {Kind: "unet", Hash: "c", Bytes: 1 << 30}},
		"next":   {{Kind: "unet", Hash: "d", Bytes: 5 << 30}},
	}
	cache.SetObserver(func(id string, _ modelcache.Resident, _ int64, tier memory.Tier) { mgr.Place(id, tier, comps[id]) })
	var closed []string
	load := fakeLoader(t, cache, &closed)
	load("ft-old", 3<<30)
	load("other", 2<<30)
	load("ft-new", 1<<30) // shares 2.5 GiB with ft-old: 6 GiB in use
	// next needs 5 GiB, 4 free: 1 GiB more. By size, ft-old (3 GiB, least
	// recently used) covers it, but evicting it frees only its own 0.5
	// GiB; with unique bytes the policy evicts other (2 GiB, all its own).
	load("next", 5<<30)
	if strings.Join(closed, ",") != "other" {
		t.Fatalf("evicted %v, want [other]", closed)
	}
	if n := w.Host.Metrics().Calls("builtin", abi.HookEviction, wasmhost.ResultOK); n != 1 {
		t.Fatalf("the built-in module answered %d eviction calls (the native fallback does not count)", n)
	}
	if s := cache.Stats(); s.PolicyFallbacks != 0 {
		t.Fatalf("policy fell back: %+v", s)
	}
}
