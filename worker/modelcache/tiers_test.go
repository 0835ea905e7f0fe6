package modelcache

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kiln-project/kiln/core/memory"
)

// tierModel offloads and restores, with an optional restore failure, and
// reports its components for the memory manager.
type tierModel struct {
	id        string
	comps     []memory.Component
	offloaded bool
	restores  int
	failNext  bool
	closed    bool
}

func (m *tierModel) Close() error   { m.closed = true; return nil }
func (m *tierModel) Offload() error { m.offloaded = true; return nil }
func (m *tierModel) Restore() error {
	if m.failNext {
		m.failNext = false
		return errors.New("restore failed")
	}
	m.offloaded = false
	m.restores++
	return nil
}
func (m *tierModel) DeviceBytes() int64 {
	var n int64
	for _, c := range m.comps {
		n += c.Bytes
	}
	return n
}

type tierLog struct {
	mu  sync.Mutex
	log []string
}

func (l *tierLog) add(id string, t memory.Tier) {
	l.mu.Lock()
	l.log = append(l.log, id+":"+t.String())
	l.mu.Unlock()
}

func (l *tierLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.log
	l.log = nil
	return out
}

func acquire(t *testing.T, c *Cache, id string, size int64, m *tierModel, loads *atomic.Int32) *tierModel {
	t.Helper()
	r, release, err := c.Acquire(context.Background(), id, size, func(context.Context) (Resident, error) {
		loads.Add(1)
		return m, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	release()
	return r.(*tierModel)
}

// offloadAll asks to offload every victim, like a Wasm policy choosing offload.
type offloadAll struct{}

func (offloadAll) Victims(needed, free int64, resident []Info) ([]Victim, error) {
	v, _ := LRU{}.Victims(needed, free, resident)
	for i := range v {
		v[i].Action = Offload
	}
	return v, nil
}

func TestOffloadRestoreAndHostBudget(t *testing.T) {
	c := newCache(100, offloadAll{})
	c.SetHostBudget(100)
	var log tierLog
	c.SetObserver(func(id string, _ Resident, _ int64, tier memory.Tier) { log.add(id, tier) })
	var loads atomic.Int32
	a := &tierModel{id: "a", comps: []memory.Component{{Kind: "unet", Bytes: 60}}}
	b := &tierModel{id: "b", comps: []memory.Component{{Kind: "unet", Bytes: 60}}}
	d := &tierModel{id: "d", comps: []memory.Component{{Kind: "unet", Bytes: 70}}}
	acquire(t, c, "a", 50, a, &loads) // estimate 50, Sizer says 60
	if s := c.Stats(); s.Bytes != 60 {
		t.Fatalf("bytes %d after load, want the model's own 60", s.Bytes)
	}
	acquire(t, c, "b", 60, b, &loads) // a goes to host memory
	if !a.offloaded || c.Stats().HostBytes != 60 || c.Stats().Offloaded != 1 {
		t.Fatalf("a offloaded=%v stats %+v", a.offloaded, c.Stats())
	}
	// a comes back by restore, not by a load; b moves to the host.
	if got := acquire(t, c, "a", 60, nil, &loads); got != a || a.restores != 1 || loads.Load() != 2 {
		t.Fatalf("restore: got %v restores %d loads %d", got, a.restores, loads.Load())
	}
	// Restoring a needs b's device memory; b cannot go to host memory
	// while a's copy is still there (60 + 60 > 100), so b is dropped.
	if s := c.Stats(); !b.closed || s.Evictions != 1 || s.HostBytes != 0 {
		t.Fatalf("after restoring a: b closed=%v stats %+v", b.closed, s)
	}
	acquire(t, c, "d", 70, d, &loads) // a to the host
	b.closed = false
	acquire(t, c, "b", 60, b, &loads) // d to the host: a (LRU there) is dropped
	s := c.Stats()
	if !a.closed || s.Demotions != 1 || s.HostBytes != 70 || !d.offloaded {
		t.Fatalf("after b again: a closed=%v stats %+v", a.closed, s)
	}
	if got := log.take(); !reflect.DeepEqual(got, []string{"a:gpu", "a:host", "b:gpu", "b:disk", "a:gpu", "a:host", "d:gpu", "a:disk", "d:host", "b:gpu"}) {
		t.Fatalf("tier changes %v", got)
	}
	infos := c.Offloaded()
	if len(infos) != 1 || infos[0].ID != "d" || infos[0].OffloadTime <= 0 {
		t.Fatalf("offloaded infos %+v", infos)
	}
	// A failed restore loads the model again.
	d.failNext = true
	acquire(t, c, "d", 70, d, &loads)
	if s := c.Stats(); s.RestoreErrors != 1 || loads.Load() != 5 || s.Bytes != 70 || s.HostBytes != 0 {
		t.Fatalf("failed restore: stats %+v loads %d", s, loads.Load())
	}
}

func TestMeterCountsSharedComponentsOnce(t *testing.T) {
	mgr, err := memory.New(memory.Config{Name: "cuda:0", Budget: 100})
	if err != nil {
		t.Fatal(err)
	}
	c := newCache(100, nil)
	c.SetMeter(func() int64 { return mgr.TierBytes(memory.GPU) })
	c.SetObserver(func(id string, r Resident, _ int64, tier memory.Tier) {
		mgr.Place(id, tier, r.(*tierModel).comps)
	})
	c.SetDemand(func(id string) int { return len(id) })
	vae := memory.Component{Kind: "vae", Hash: "vae", Bytes: 30}
	te := memory.Component{Kind: "text_encoder", Hash: "te", Bytes: 20}
	var loads atomic.Int32
	mk := func(id string) *tierModel {
		return &tierModel{id: id, comps: []memory.Component{vae, te, {Kind: "unet", Hash: id, Bytes: 25}}}
	}
	acquire(t, c, "ft1", 75, mk("ft1"), &loads)
	acquire(t, c, "ft2", 25, mk("ft2"), &loads) // shares 50 bytes: fits without eviction
	if s := c.Stats(); s.Evictions != 0 || s.Resident != 2 || mgr.TierBytes(memory.GPU) != 100 || mgr.SavedBytes(memory.GPU) != 50 {
		t.Fatalf("two fine-tunes sharing VAE and TE: stats %+v gpu %d saved %d", s, mgr.TierBytes(memory.GPU), mgr.SavedBytes(memory.GPU))
	}
	if r := c.Resident(); r[0].Queued != 3 {
		t.Fatalf("demand not passed to policies: %+v", r)
	}
	// A third needs 25 more: evicting ft1 frees only its UNet (ft2 still
	// holds the shared parts), which is enough.
	acquire(t, c, "ft3", 25, mk("ft3"), &loads)
	if s := c.Stats(); s.Evictions != 1 || mgr.TierBytes(memory.GPU) != 100 {
		t.Fatalf("third fine-tune: stats %+v gpu %d", s, mgr.TierBytes(memory.GPU))
	}
	// Free offloads or drops everything but the model kept.
	if n := c.Free("ft3"); n != 1 || mgr.TierBytes(memory.GPU) != 75 {
		t.Fatalf("Free moved %d, gpu %d", n, mgr.TierBytes(memory.GPU))
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mgr.TierBytes(memory.GPU) + mgr.TierBytes(memory.Host); got != 0 {
		t.Fatalf("after Close the manager still counts %d bytes", got)
	}
}

func TestTiersConcurrently(t *testing.T) {
	c := New(100, offloadAll{})
	c.SetHostBudget(100)
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				id := fmt.Sprint("m", (g+i)%5)
				_, release, err := c.Acquire(context.Background(), id, 30, func(context.Context) (Resident, error) {
					return &tierModel{id: id, comps: []memory.Component{{Kind: "unet", Bytes: 30}}}, nil
				})
				if err == nil {
					release()
				}
				c.Stats()
			}
		}()
	}
	wg.Wait()
	s := c.Stats()
	if s.Bytes > 100 || s.HostBytes > 100 {
		t.Fatalf("over budget: %+v", s)
	}
}
