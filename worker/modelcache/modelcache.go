// Package modelcache keeps loaded models resident under a memory budget.
// A model is loaded on first use; when a new one does not fit, an eviction
// policy chooses which resident models to drop (or offload to host memory).
// The policy is an interface so that a pluggable (WebAssembly) policy can
// replace the built-in least-recently-used one; whatever it answers is
// validated, and an invalid or insufficient answer falls back to LRU.
//
// Models live on three tiers: the device (counted against the budget),
// pinned host memory (offloaded; counted against the host budget, brought
// back by a host-to-device copy) and disk (dropped; loaded again from the
// memory-mapped checkpoint). When the host budget is full, the least
// recently used offloaded models are dropped to make room. A meter (the
// memory manager, which counts components shared between models once) may
// replace the cache's own sum of model sizes.
package modelcache

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/kiln-project/kiln/core/memory"
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

// Restorer is implemented by Offloaders that bring their weights back to
// the device explicitly before use; a failed Restore makes the cache load
// the model again.
type Restorer interface {
	// Restore moves offloaded weights back to the device.
	Restore() error
}

// Sizer is implemented by models that know their device bytes once
// loaded; the cache then uses that instead of the estimate given to
// Acquire.
type Sizer interface {
	// DeviceBytes is the device memory the model holds.
	DeviceBytes() int64
}

// Observer is told every tier change of a model (bytes is its size as the
// cache counts it): GPU after a load or a restore, Host after an offload,
// Disk when dropped. It is called with the cache's lock held and must not
// call the cache.
type Observer func(id string, m Resident, bytes int64, tier memory.Tier)

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
	// OffloadTime and RestoreTime are the last measured offload and
	// restore (zero before the first).
	OffloadTime, RestoreTime time.Duration
	// Queued is the number of queued jobs for the model (the demand
	// function's answer; 0 without one).
	Queued int
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
	// Restores counts offloaded models brought back; RestoreErrors those
	// that failed and were loaded again; Demotions offloaded models dropped
	// to make room in host memory.
	Restores, RestoreErrors, Demotions int64
	// Bytes is the memory held by resident models; Budget the limit.
	Bytes, Budget int64
	// HostBytes is the memory held by offloaded models; HostBudget its
	// limit (0: unlimited).
	HostBytes, HostBudget int64
	Resident              int
	// Offloaded counts models in host memory.
	Offloaded int
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

	offloadTime, restoreTime time.Duration
	added                    int64 // while loading: the device bytes it is expected to add
}

// Cache holds models under a budget. It is safe for concurrent use.
type Cache struct {
	mu         sync.Mutex
	budget     int64
	hostBudget int64
	hostBytes  int64
	policy     Policy
	entries    map[string]*entry
	stats      Stats
	now        func() time.Time
	meter      func() int64
	estimate   func(id string, size int64) int64
	observe    Observer
	demand     func(id string) int
	larger     bool // SetLoadsLarger
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

// SetLoadsLarger makes models larger than the budget load anyway, counted
// at the budget until loaded (then at their measured DeviceBytes): for an
// engine that fits such models itself, by loading their components one
// at a time or storing their weights in 8 bits.
func (c *Cache) SetLoadsLarger(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.larger = on
}

// SetHostBudget bounds the host memory offloaded models may hold (0:
// unlimited).
func (c *Cache) SetHostBudget(n int64) {
	c.mu.Lock()
	c.hostBudget = max(n, 0)
	c.mu.Unlock()
}

// SetMeter makes the cache measure the device memory its resident models
// hold with fn (e.g. the memory manager's GPU tier, which counts shared
// components once) instead of summing their sizes. Models being loaded
// are added to fn's answer with their estimates.
func (c *Cache) SetMeter(fn func() int64) {
	c.mu.Lock()
	c.meter = fn
	c.mu.Unlock()
}

// SetEstimator installs the function giving the device bytes a model
// would add if loaded or restored now (size is the caller's or the cache's
// figure): with components shared by content, a fine-tune of a resident
// model adds only its own parts.
func (c *Cache) SetEstimator(fn func(id string, size int64) int64) {
	c.mu.Lock()
	c.estimate = fn
	c.mu.Unlock()
}

func (c *Cache) estimateLocked(id string, size int64) int64 {
	if c.estimate == nil {
		return size
	}
	return max(0, c.estimate(id, size))
}

// SetObserver installs the function told about tier changes.
func (c *Cache) SetObserver(o Observer) {
	c.mu.Lock()
	c.observe = o
	c.mu.Unlock()
}

// SetDemand installs the function giving each model's queued jobs, which
// eviction policies see as Info.Queued.
func (c *Cache) SetDemand(fn func(id string) int) {
	c.mu.Lock()
	c.demand = fn
	c.mu.Unlock()
}

func (c *Cache) notify(e *entry, t memory.Tier) {
	if c.observe != nil {
		c.observe(e.id, e.model, e.bytes, t)
	}
}

// usedLocked is the device memory resident models hold.
func (c *Cache) usedLocked() int64 {
	if c.meter == nil {
		return c.stats.Bytes
	}
	n := c.meter()
	for _, e := range c.entries {
		if e.loading != nil {
			n += e.added
		}
	}
	return n
}

func (c *Cache) freeLocked() int64 { return c.budget - c.usedLocked() }

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
			if err := c.makeRoomLocked(c.estimateLocked(id, e.bytes), id); err != nil {
				c.mu.Unlock()
				return nil, nil, err
			}
			if !c.restoreLocked(e) {
				c.mu.Unlock()
				continue // dropped: load it again
			}
		}
		if ok {
			e.refs++
			e.uses++
			e.lastUse = c.now()
			c.stats.Hits++
			c.mu.Unlock()
			return e.model, c.releaser(e), nil
		}
		if size > c.budget && c.larger {
			size = c.budget // the engine fits it at load (sequential loading, 8-bit weights)
		}
		if size > c.budget {
			c.mu.Unlock()
			return nil, nil, fmt.Errorf("%w: %s needs %d bytes, budget %d", ErrTooLarge, id, size, c.budget)
		}
		added := c.estimateLocked(id, size)
		if c.larger {
			added = min(added, c.budget)
		}
		if err := c.makeRoomLocked(added, id); err != nil {
			c.mu.Unlock()
			return nil, nil, err
		}
		e = &entry{id: id, bytes: size, added: added, loading: make(chan struct{})}
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
		if sz, ok := m.(Sizer); ok {
			if n := sz.DeviceBytes(); n > 0 {
				c.stats.Bytes += n - e.bytes
				e.bytes = n
			}
		}
		c.stats.Loads++
		c.notify(e, memory.GPU)
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

// restoreLocked brings an offloaded entry back to the device; it reports
// false when that failed and the entry was dropped.
func (c *Cache) restoreLocked(e *entry) bool {
	start := c.now()
	if r, ok := e.model.(Restorer); ok {
		if err := r.Restore(); err != nil {
			c.stats.RestoreErrors++
			_ = e.model.Close()
			delete(c.entries, e.id)
			c.hostBytes -= e.bytes
			c.notify(e, memory.Disk)
			return false
		}
	}
	e.restoreTime = c.now().Sub(start)
	e.offload = false
	c.hostBytes -= e.bytes
	c.stats.Bytes += e.bytes
	c.stats.Restores++
	c.notify(e, memory.GPU)
	return true
}

// infosLocked lists the models on one tier: resident (offloaded false) or
// in host memory.
func (c *Cache) infosLocked(offloaded bool) []Info {
	out := make([]Info, 0, len(c.entries))
	for _, e := range c.entries {
		if e.offload != offloaded {
			continue
		}
		i := Info{ID: e.id, Bytes: e.bytes, LastUse: e.lastUse, Uses: e.uses,
			LoadTime: e.loadTime, Pinned: e.pinned, InUse: e.refs > 0 || e.loading != nil,
			OffloadTime: e.offloadTime, RestoreTime: e.restoreTime}
		if c.demand != nil {
			i.Queued = c.demand(e.id)
		}
		out = append(out, i)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// makeRoomLocked evicts until needed bytes fit, asking the policy first
// and falling back to LRU for an invalid or insufficient answer.
func (c *Cache) makeRoomLocked(needed int64, forID string) error {
	free := c.freeLocked()
	if free >= needed {
		return nil
	}
	infos := c.infosLocked(false)
	victims, err := c.policy.Victims(needed, free, infos)
	if err == nil {
		err = c.validate(victims, infos, forID)
	}
	if err != nil {
		c.stats.PolicyFallbacks++
		victims, _ = LRU{}.Victims(needed, free, infos)
	}
	for _, v := range victims {
		c.evictLocked(v, forID)
		if c.freeLocked() >= needed {
			return nil
		}
	}
	// The policy's answer did not free enough: complete it with LRU, one
	// model at a time (with a meter, a shared component frees nothing
	// until its last holder leaves).
	if c.freeLocked() < needed {
		if err == nil {
			c.stats.PolicyFallbacks++
		}
		for c.freeLocked() < needed {
			rest, _ := LRU{}.Victims(needed, c.freeLocked(), c.infosLocked(false))
			if len(rest) == 0 {
				break
			}
			c.evictLocked(rest[0], forID)
		}
	}
	if free := c.freeLocked(); free < needed {
		return fmt.Errorf("modelcache: %s needs %d bytes but only %d are free and the rest is in use", forID, needed, free)
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

func (c *Cache) evictLocked(v Victim, forID string) {
	e, ok := c.entries[v.ID]
	if !ok || e.refs > 0 || e.loading != nil || e.offload {
		return
	}
	if off, can := e.model.(Offloader); v.Action == Offload && can && c.hostRoomLocked(e.bytes, forID) {
		start := c.now()
		if off.Offload() == nil {
			e.offloadTime = c.now().Sub(start)
			e.offload = true
			c.stats.Bytes -= e.bytes
			c.hostBytes += e.bytes
			c.stats.Offloads++
			c.notify(e, memory.Host)
			return
		}
	}
	c.dropLocked(e)
	c.stats.Evictions++
}

// dropLocked closes a model and forgets it (its tier becomes disk).
func (c *Cache) dropLocked(e *entry) {
	_ = e.model.Close()
	delete(c.entries, e.id)
	if e.offload {
		c.hostBytes -= e.bytes
	} else {
		c.stats.Bytes -= e.bytes
	}
	c.notify(e, memory.Disk)
}

// hostRoomLocked makes room for n bytes in host memory by dropping the
// least recently used offloaded models (never keep, which is being
// restored); it reports whether n fits.
func (c *Cache) hostRoomLocked(n int64, keep string) bool {
	if c.hostBudget <= 0 {
		return true
	}
	if n > c.hostBudget {
		return false
	}
	off := c.infosLocked(true)
	sort.SliceStable(off, func(i, j int) bool { return off[i].LastUse.Before(off[j].LastUse) })
	for _, i := range off {
		if c.hostBytes+n <= c.hostBudget {
			break
		}
		if i.ID == keep || i.InUse || i.Pinned {
			continue
		}
		c.dropLocked(c.entries[i.ID])
		c.stats.Demotions++
	}
	return c.hostBytes+n <= c.hostBudget
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
	return c.infosLocked(false)
}

// Offloaded lists the models in host memory.
func (c *Cache) Offloaded() []Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.infosLocked(true)
}

// Free evicts every resident model that is neither in use, pinned nor
// keep, offloading those that can be (and fit in host memory), and
// reports how many it moved. It is the "free other models" step of
// out-of-memory recovery.
func (c *Cache) Free(keep string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, i := range c.infosLocked(false) {
		if i.InUse || i.Pinned || i.ID == keep {
			continue
		}
		c.evictLocked(Victim{ID: i.ID, Action: Offload}, keep)
		n++
	}
	return n
}

// Stats returns counters and the current occupancy.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Budget = c.budget
	s.HostBytes, s.HostBudget = c.hostBytes, c.hostBudget
	s.Resident = len(c.infosLocked(false))
	s.Offloaded = len(c.infosLocked(true))
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
		} else {
			c.hostBytes -= e.bytes
		}
		c.notify(e, memory.Disk)
	}
	return first
}
