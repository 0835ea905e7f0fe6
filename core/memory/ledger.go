package memory

import (
	"fmt"
	"sort"
)

// Tier is where a model's weights are.
type Tier int

// Tiers, fastest first.
const (
	// Disk: only the memory-mapped checkpoint; using it means a load.
	Disk Tier = iota
	// Host: pinned host memory; using it means a host-to-device copy.
	Host
	// GPU: resident on the device.
	GPU
)

// String names the tier as metrics and the API show it.
func (t Tier) String() string {
	switch t {
	case GPU:
		return "gpu"
	case Host:
		return "host"
	}
	return "disk"
}

// Component is one part of a model (text encoder, UNet, VAE) identified by
// a hash of its tensors' bytes: models whose components hash the same hold
// them once.
type Component struct {
	// Kind is the component's role ("text_encoder", "unet", "vae").
	Kind string `json:"kind"`
	// Hash identifies the content (names, dtypes, shapes and bytes).
	Hash string `json:"hash"`
	// Bytes is what the component holds on the device.
	Bytes int64 `json:"bytes"`
}

// SharedComponent is a component a model holds together with others.
type SharedComponent struct {
	Component
	// With lists the other models holding it, in name order.
	With []string `json:"with"`
}

// ModelUsage is one placed model's memory.
type ModelUsage struct {
	Model string `json:"model"`
	Tier  Tier   `json:"-"`
	// TierName is Tier as text.
	TierName string `json:"tier"`
	// Bytes is the sum of the model's components.
	Bytes int64 `json:"bytes"`
	// Unique is what the model alone holds on its tier: what evicting it
	// frees there.
	Unique int64 `json:"unique_bytes"`
	// Components lists them in kind order.
	Components []Component `json:"components"`
	// Shared lists the components other placed models hold too.
	Shared []SharedComponent `json:"shared,omitempty"`
}

type placed struct {
	tier  Tier
	comps []Component
}

// ledger records which models hold which components on which tier.
type ledger struct {
	models map[string]placed
}

func newLedger() *ledger { return &ledger{models: map[string]placed{}} }

// holders maps each component hash to the highest tier any model holds it
// on and its size.
func (l *ledger) holders() map[string]struct {
	tier  Tier
	bytes int64
} {
	out := map[string]struct {
		tier  Tier
		bytes int64
	}{}
	for _, p := range l.models {
		for _, c := range p.comps {
			h, ok := out[c.Hash]
			if !ok || p.tier > h.tier {
				h.tier = p.tier
			}
			h.bytes = max(h.bytes, c.Bytes)
			out[c.Hash] = h
		}
	}
	return out
}

// tierBytes is the memory held on t, each component once, on the highest
// tier any model holds it (a VAE on the GPU for one model and offloaded
// for another is on the GPU only).
func (l *ledger) tierBytes(t Tier) int64 {
	var n int64
	for _, h := range l.holders() {
		if h.tier == t {
			n += h.bytes
		}
	}
	return n
}

// savedBytes is what sharing saves on t: bytes that models on t would hold
// again without it.
func (l *ledger) savedBytes(t Tier) int64 {
	var sum int64
	for _, p := range l.models {
		if p.tier != t {
			continue
		}
		for _, c := range p.comps {
			sum += c.Bytes
		}
	}
	return sum - l.tierBytes(t)
}

// Place records that model holds comps on tier (replacing what was
// recorded for it). Components without a hash are the model's own.
func (m *Manager) Place(model string, tier Tier, comps []Component) error {
	if tier < Disk || tier > GPU {
		return fmt.Errorf("memory: %s: unknown tier %d", model, tier)
	}
	cs := make([]Component, len(comps))
	for i, c := range comps {
		if c.Bytes < 0 {
			return fmt.Errorf("memory: %s: component %s has negative size", model, c.Kind)
		}
		if c.Hash == "" {
			c.Hash = "own:" + model + "/" + c.Kind
		}
		cs[i] = c
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].Kind < cs[j].Kind })
	m.mu.Lock()
	defer m.mu.Unlock()
	if tier == Disk {
		delete(m.ledger.models, model)
		return nil
	}
	m.ledger.models[model] = placed{tier: tier, comps: cs}
	return nil
}

// Remove forgets a model (dropped to disk).
func (m *Manager) Remove(model string) {
	m.mu.Lock()
	delete(m.ledger.models, model)
	m.mu.Unlock()
}

// AddedBytes is what placing comps on tier would add there given what is
// placed now (components already held on tier or above cost nothing).
func (m *Manager) AddedBytes(tier Tier, comps []Component) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	hs := m.ledger.holders()
	var n int64
	seen := map[string]bool{}
	for _, c := range comps {
		if c.Hash != "" {
			if h, ok := hs[c.Hash]; (ok && h.tier >= tier) || seen[c.Hash] {
				continue
			}
			seen[c.Hash] = true
		}
		n += c.Bytes
	}
	return n
}

// Components returns what model was placed with (nil when it is not
// placed).
func (m *Manager) Components(model string) []Component {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.ledger.models[model]
	if !ok {
		return nil
	}
	return append([]Component(nil), p.comps...)
}

// UniqueBytes is what model alone holds on its tier (what evicting it
// frees there); false when it is not placed.
func (m *Manager) UniqueBytes(model string) (int64, bool) {
	for _, u := range m.Models() {
		if u.Model == model {
			return u.Unique, true
		}
	}
	return 0, false
}

// TierBytes is the memory held on t, shared components once.
func (m *Manager) TierBytes(t Tier) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ledger.tierBytes(t)
}

// SavedBytes is the memory on t that sharing components saves.
func (m *Manager) SavedBytes(t Tier) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ledger.savedBytes(t)
}

// Models describes every placed model, in name order.
func (m *Manager) Models() []ModelUsage {
	m.mu.Lock()
	defer m.mu.Unlock()
	byHash := map[string][]string{}
	for _, id := range sortedKeys(m.ledger.models) {
		for _, c := range m.ledger.models[id].comps {
			byHash[c.Hash] = append(byHash[c.Hash], id)
		}
	}
	hs := m.ledger.holders()
	var out []ModelUsage
	for _, id := range sortedKeys(m.ledger.models) {
		p := m.ledger.models[id]
		u := ModelUsage{Model: id, Tier: p.tier, TierName: p.tier.String(), Components: append([]Component(nil), p.comps...)}
		for _, c := range p.comps {
			u.Bytes += c.Bytes
			var with []string
			alone := true
			for _, other := range byHash[c.Hash] {
				if other == id {
					continue
				}
				with = append(with, other)
				if m.ledger.models[other].tier >= p.tier {
					alone = false
				}
			}
			if alone && hs[c.Hash].tier == p.tier {
				u.Unique += c.Bytes
			}
			if len(with) > 0 {
				u.Shared = append(u.Shared, SharedComponent{Component: c, With: with})
			}
		}
		out = append(out, u)
	}
	return out
}
