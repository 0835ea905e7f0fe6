package modelcache

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

type fakeModel struct {
	name    string
	closed  *atomic.Int32
	offload bool
}

func (m *fakeModel) Close() error { m.closed.Add(1); return nil }

type offModel struct{ fakeModel }

func (m *offModel) Offload() error { m.offload = true; return nil }

type clock struct{ t time.Time }

func (c *clock) now() time.Time { c.t = c.t.Add(time.Second); return c.t }

func newCache(budget int64, p Policy) *Cache {
	c := New(budget, p)
	ck := &clock{t: time.Unix(1000, 0)}
	c.now = ck.now
	return c
}

func loader(closed *atomic.Int32, loads *atomic.Int32, name string) Loader {
	return func(context.Context) (Resident, error) {
		loads.Add(1)
		return &fakeModel{name: name, closed: closed}, nil
	}
}

func TestLoadOnceAndHit(t *testing.T) {
	var closed, loads atomic.Int32
	c := newCache(100, nil)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		m, release, err := c.Acquire(ctx, "a", 40, loader(&closed, &loads, "a"))
		if err != nil || m.(*fakeModel).name != "a" {
			t.Fatal(err)
		}
		release()
	}
	if loads.Load() != 1 {
		t.Fatalf("loaded %d times", loads.Load())
	}
	s := c.Stats()
	if s.Hits != 2 || s.Loads != 1 || s.Bytes != 40 || s.Resident != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	var closed, loads atomic.Int32
	c := newCache(100, nil)
	ctx := context.Background()
	use := func(id string) {
		_, release, err := c.Acquire(ctx, id, 40, loader(&closed, &loads, id))
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	use("a")
	use("b")
	use("a") // b is now least recently used
	use("c") // needs 40, free 20: evict b
	ids := map[string]bool{}
	for _, i := range c.Resident() {
		ids[i.ID] = true
	}
	if !ids["a"] || !ids["c"] || ids["b"] {
		t.Fatalf("resident %v, want a and c", ids)
	}
	if closed.Load() != 1 || c.Stats().Evictions != 1 {
		t.Fatalf("closed %d, stats %+v", closed.Load(), c.Stats())
	}
}

func TestInUseIsNeverEvicted(t *testing.T) {
	var closed, loads atomic.Int32
	c := newCache(100, nil)
	ctx := context.Background()
	_, relA, err := c.Acquire(ctx, "a", 60, loader(&closed, &loads, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Acquire(ctx, "b", 60, loader(&closed, &loads, "b")); err == nil {
		t.Fatal("b loaded although a is in use and both do not fit")
	}
	relA()
	if _, _, err := c.Acquire(ctx, "b", 60, loader(&closed, &loads, "b")); err != nil {
		t.Fatalf("after release: %v", err)
	}
	if _, _, err := c.Acquire(ctx, "huge", 101, loader(&closed, &loads, "huge")); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}

// badPolicy answers nonsense; the cache must fall back to LRU.
type badPolicy struct{ answer []Victim }

func (p badPolicy) Victims(int64, int64, []Info) ([]Victim, error) { return p.answer, nil }

func TestInvalidPolicyFallsBackToLRU(t *testing.T) {
	for name, answer := range map[string][]Victim{
		"unknown":   {{ID: "nope"}},
		"in use":    {{ID: "busy"}},
		"duplicate": {{ID: "idle"}, {ID: "idle"}},
		"nothing":   nil,
	} {
		t.Run(name, func(t *testing.T) {
			var closed, loads atomic.Int32
			c := newCache(100, badPolicy{answer})
			ctx := context.Background()
			_, relBusy, _ := c.Acquire(ctx, "busy", 40, loader(&closed, &loads, "busy"))
			_, relIdle, _ := c.Acquire(ctx, "idle", 40, loader(&closed, &loads, "idle"))
			relIdle()
			if _, _, err := c.Acquire(ctx, "new", 40, loader(&closed, &loads, "new")); err != nil {
				t.Fatal(err)
			}
			relBusy()
			if c.Stats().PolicyFallbacks == 0 {
				t.Fatal("no fallback counted")
			}
			for _, i := range c.Resident() {
				if i.ID == "idle" {
					t.Fatal("LRU fallback kept idle")
				}
			}
		})
	}
}

// pickPolicy evicts exactly what it is told (offloading).
type pickPolicy struct{ id string }

func (p pickPolicy) Victims(needed, free int64, rs []Info) ([]Victim, error) {
	return []Victim{{ID: p.id, Action: Offload}}, nil
}

func TestPolicyChoiceAndOffload(t *testing.T) {
	var closed atomic.Int32
	c := newCache(100, pickPolicy{"a"})
	ctx := context.Background()
	mk := func(id string) Loader {
		return func(context.Context) (Resident, error) { return &offModel{fakeModel{name: id, closed: &closed}}, nil }
	}
	for _, id := range []string{"a", "b"} {
		_, rel, err := c.Acquire(ctx, id, 40, mk(id))
		if err != nil {
			t.Fatal(err)
		}
		rel()
	}
	_, rel, err := c.Acquire(ctx, "b", 40, mk("b")) // b is the most recent; LRU would pick a too
	if err != nil {
		t.Fatal(err)
	}
	rel()
	// A policy that picks the most recently used model shows it is obeyed.
	c.SetPolicy(pickPolicy{"b"})
	if _, rel, err = c.Acquire(ctx, "c", 40, mk("c")); err != nil {
		t.Fatal(err)
	}
	rel()
	s := c.Stats()
	if s.Offloads != 1 || s.Evictions != 0 || closed.Load() != 0 {
		t.Fatalf("stats %+v closed %d", s, closed.Load())
	}
	for _, i := range c.Resident() {
		if i.ID == "b" {
			t.Fatal("b still resident after the policy offloaded it")
		}
	}
	// Using b again brings it back without a load (evicting by LRU as needed).
	if _, rel, err = c.Acquire(ctx, "b", 40, func(context.Context) (Resident, error) {
		t.Fatal("offloaded model reloaded from disk")
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	rel()
}

func TestLoadErrorIsNotCached(t *testing.T) {
	c := newCache(100, nil)
	ctx := context.Background()
	boom := errors.New("bad checkpoint")
	if _, _, err := c.Acquire(ctx, "a", 10, func(context.Context) (Resident, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	s := c.Stats()
	if s.Bytes != 0 || s.LoadErrors != 1 || s.Resident != 0 {
		t.Fatalf("stats %+v", s)
	}
}
