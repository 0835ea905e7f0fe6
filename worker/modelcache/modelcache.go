// Package modelcache keeps loaded models resident under a memory budget.
// A model is loaded on first use; when a new one does not fit, an eviction
// policy chooses which resident models to drop (or offload to host memory).
// The policy is an interface so that a pluggable (WebAssembly) policy can
// replace the built-in least-recently-used one; whatever it answers is
// validated, and an invalid or insufficient answer falls back to LRU.
package modelcache

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Resident is a loaded model.
type Resident interface {
	// Close releases the model's memory.
	Close() error
}

// Offloader is implemented by models that can move their weights to host
// memory and back, freeing device memory without a reload from disk.
type Offloader interface {
	// Offload moves the weights to host memory.
	Offload() error
}

// Action is what happens to an evicted model.
type Action int

// Eviction actions.
const (
	// Drop closes the model; a later use loads it again.
	Drop Action = iota
	// Offload keeps the model in host memory (when it is an Offloader).
	Offload
)

// String names the action.
func (a Action) String() string {
	if a == Offload {
		return "offload"
	}
	return "drop"
}

// Info describes a resident model to an eviction policy.
type Info struct {
	ID       string
	Bytes    int64
	LastUse  time.Time
	Uses     int64
	LoadTime time.Duration
	Pinned   bool
	InUse    bool
}

// Victim is one eviction decision.
type Victim struct {
	ID     string
	Action Action
}

// Policy chooses victims when needed bytes do not fit. resident lists every
// model in the cache; the answer is an ordered list of victims. Models in
// use or pinned must not be chosen.
type Policy interface {
	Victims(needed, free int64, resident []Info) ([]Victim, error)
}

// LRU evicts the least recently used models that are neither in use nor
// pinned, until enough memory is free. It is the built-in policy and the
// fallback of every other.
type LRU struct{}

// Victims implements Policy.
func (LRU) Victims(needed, free int64, resident []Info) ([]Victim, error) {
	cands := make([]Info, 0, len(resident))
	for _, r := range resident {
		if !r.InUse && !r.Pinned {
			cands = append(cands, r)
		}
	}
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].LastUse.Before(cands[j].LastUse) })
	var out []Victim
	for _, c := range cands {
		if free >= needed {
			break
		}
		out = append(out, Victim{ID: c.ID, Action: Drop})
		free += c.Bytes
	}
	return out, nil
}

// ErrTooLarge reports a model that does not fit the budget even alone.
var ErrTooLarge = errors.New("modelcache: model larger than the memory budget")

// Stats count what the cache did.
type Stats struct {
	Hits, Loads, LoadErrors, Evictions, Offloads, PolicyFallbacks int64
	// Bytes is the memory held by resident models; Budget the limit.
	Bytes, Budget int64
	Resident      int
}

type entry struct {
	id       string
	model    Resident
	bytes    int64
	lastUse  time.Time
	uses     int64
	loadTime time.Duration
	pinned   bool
	refs     int
	offload  bool // offloaded: not counted against the budget
	loading  chan struct{}
}

// Cache holds models under a budget. It is safe for concurrent use.
type Cache struct {
	mu      sync.Mutex
	budget  int64
	policy  Policy
	entries map[string]*entry
	stats   Stats
	now     func() time.Time
}

// New returns a cache with the given budget in bytes and eviction policy
// (nil means LRU).
func New(budget int64, policy Policy) *Cache {
	if policy == nil {
		policy = LRU{}
	}
	return &Cache{budget: budget, policy: policy, entries: map[string]*entry{}, now: time.Now}
}

// SetPolicy replaces the eviction policy (nil restores LRU).
func (c *Cache) SetPolicy(p Policy) {
	if p == nil {
		p = LRU{}
	}
	c.mu.Lock()
	c.policy = p
	c.mu.Unlock()
}

// Loader loads a model; size is its expected resident size in bytes.
type Loader func(ctx context.Context) (Resident, error)

// Acquire returns the model id, loading it with load when absent, and a
// release function to call when the caller is done using it. size is the
// memory the model needs (an estimate before loading, e.g. its file sizes).
func (c *Cache) Acquire(ctx context.Context, id string, size int64, load Loader) (Resident, func(), error) {
	for {
		c.mu.Lock()
		e, ok := c.entries[id]
		if ok && e.loading != nil {
			ch := e.loading
			c.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
		}
		if ok && e.offload {
			// Bring an offloaded model back: it needs its memory again.
			if err := c.makeRoomLocked(e.bytes, id); err != nil {
				c.mu.Unlock()
				return nil, nil, err
			}
			e.offload = false
			c.stats.Bytes += e.bytes
		}
		if ok {
			e.refs++
			e.uses++
			e.lastUse = c.now()
			c.stats.Hits++
			c.mu.Unlock()
			return e.model, c.releaser(e), nil
		}
		if size > c.budget {
			c.mu.Unlock()
			return nil, nil, fmt.Errorf("%w: %s needs %d bytes, budget %d", ErrTooLarge, id, size, c.budget)
		}
		if err := c.makeRoomLocked(size, id); err != nil {
			c.mu.Unlock()
			return nil, nil, err
		}
		e = &entry{id: id, bytes: size, loading: make(chan struct{})}
		c.entries[id] = e
		c.stats.Bytes += size
		c.mu.Unlock()

		start := c.now()
		m, err := load(ctx)
		c.mu.Lock()
		close(e.loading)
		e.loading = nil
		if err != nil {
			delete(c.entries, id)
			c.stats.Bytes -= size
			c.stats.LoadErrors++
			c.mu.Unlock()
			return nil, nil, fmt.Errorf("modelcache: load %s: %w", id, err)
		}
		e.model = m
		e.loadTime = c.now().Sub(start)
		e.refs = 1
		e.uses = 1
		e.lastUse = c.now()
		c.stats.Loads++
		c.mu.Unlock()
		return m, c.releaser(e), nil
	}
}

func (c *Cache) releaser(e *entry) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			e.refs--
			e.lastUse = c.now()
			c.mu.Unlock()
		})
	}
}

// infosLocked lists resident (not offloaded) models.
func (c *Cache) infosLocked() []Info {
	out := make([]Info, 0, len(c.entries))
	for _, e := range c.entries {
		if e.offload {
			continue
		}
		out = append(out, Info{ID: e.id, Bytes: e.bytes, LastUse: e.lastUse, Uses: e.uses,
			LoadTime: e.loadTime, Pinned: e.pinned, InUse: e.refs > 0 || e.loading != nil})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// makeRoomLocked evicts until needed bytes fit, asking the policy first
// and falling back to LRU for an invalid or insufficient answer.
func (c *Cache) makeRoomLocked(needed int64, forID string) error {
	free := c.budget - c.stats.Bytes
	if free >= needed {
		return nil
	}
	infos := c.infosLocked()
	victims, err := c.policy.Victims(needed, free, infos)
	if err == nil {
		err = c.validate(victims, infos, forID)
	}
	if err != nil {
		c.stats.PolicyFallbacks++
		victims, _ = LRU{}.Victims(needed, free, infos)
	}
	for _, v := range victims {
		c.evictLocked(v)
		if c.budget-c.stats.Bytes >= needed {
			return nil
		}
	}
	// The policy's answer did not free enough: complete it with LRU.
	if c.budget-c.stats.Bytes < needed {
		if err == nil {
			c.stats.PolicyFallbacks++
		}
		rest, _ := LRU{}.Victims(needed, c.budget-c.stats.Bytes, c.infosLocked())
		for _, v := range rest {
			c.evictLocked(v)
		}
	}
	if c.budget-c.stats.Bytes < needed {
		return fmt.Errorf("modelcache: %s needs %d bytes but only %d are free and the rest is in use", forID, needed, c.budget-c.stats.Bytes)
	}
	return nil
}

func (c *Cache) validate(victims []Victim, infos []Info, forID string) error {
	byID := map[string]Info{}
	for _, i := range infos {
		byID[i.ID] = i
	}
	seen := map[string]bool{}
	for _, v := range victims {
		i, ok := byID[v.ID]
		switch {
		case !ok:
			return fmt.Errorf("modelcache: policy chose unknown model %q", v.ID)
		case seen[v.ID]:
			return fmt.Errorf("modelcache: policy chose %q twice", v.ID)
		case i.InUse || i.Pinned:
			return fmt.Errorf("modelcache: policy chose %q, which is in use or pinned", v.ID)
		case v.ID == forID:
			return fmt.Errorf("modelcache: policy chose the model being loaded")
		case v.Action != Drop && v.Action != Offload:
			return fmt.Errorf("modelcache: policy gave an unknown action for %q", v.ID)
		}
		seen[v.ID] = true
	}
	return nil
}

func (c *Cache) evictLocked(v Victim) {
	e, ok := c.entries[v.ID]
	if !ok || e.refs > 0 || e.loading != nil || e.offload {
		return
	}
	if off, can := e.model.(Offloader); v.Action == Offload && can {
		if off.Offload() == nil {
			e.offload = true
			c.stats.Bytes -= e.bytes
			c.stats.Offloads++
			return
		}
	}
	_ = e.model.Close()
	delete(c.entries, v.ID)
	c.stats.Bytes -= e.bytes
	c.stats.Evictions++
}

// Pin keeps a model from eviction (or allows it again).
func (c *Cache) Pin(id string, pinned bool) {
	c.mu.Lock()
	if e, ok := c.entries[id]; ok {
		e.pinned = pinned
	}
	c.mu.Unlock()
}

// Resident lists the models in memory (offloaded ones excluded).
func (c *Cache) Resident() []Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.infosLocked()
}

// Stats returns counters and the current occupancy.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Budget = c.budget
	s.Resident = len(c.infosLocked())
	return s
}

// Close drops every model that is not in use and reports the first error.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first error
	for id, e := range c.entries {
		if e.refs > 0 || e.loading != nil {
			continue
		}
		if err := e.model.Close(); err != nil && first == nil {
			first = err
		}
		delete(c.entries, id)
		if !e.offload {
			c.stats.Bytes -= e.bytes
		}
	}
	return first
}
