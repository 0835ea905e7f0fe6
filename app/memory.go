package app

import (
	"path/filepath"
	"strings"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/worker"
	"github.com/kiln-project/kiln/worker/modelcache"
)

// hostBudget is the pinned host memory each of n GPUs may use for
// offloaded models (0 on the CPU, whose models cannot be offloaded).
func hostBudget(b config.Budget, ram int64, n int, gpu bool) int64 {
	if !gpu || n <= 0 {
		return 0
	}
	if b.Auto || (b.Percent == 0 && b.Bytes == 0) {
		b = config.Budget{Percent: 25}
	}
	return b.Resolve(ram, config.Budget{Percent: 25}) / int64(n)
}

// newMemory makes the memory manager of one worker slot and connects the
// slot's model cache and engine to it: the cache measures device memory
// through the manager (shared components once), estimates what a load or
// restore adds from the components the manager or the engine's hash cache
// knows, reports tier changes to the manager and keeps offloaded models
// under the host budget; the engine caches
// component hashes and the manager activation peaks under the data
// directory.
func newMemory(name string, be backend.Backend, budget, host int64, dataDir string, cache *modelcache.Cache, eng worker.Engine, pathOf func(id string) (string, bool)) (*memory.Manager, error) {
	cfg := memory.Config{Name: name, Budget: budget, HostBudget: host}
	if d, ok := be.(interface{ MemoryDevice() memory.Device }); ok {
		cfg.Device = d.MemoryDevice()
	}
	state := ""
	if dataDir != "" {
		state = filepath.Join(dataDir, "memory")
		cfg.PeakFile = filepath.Join(state, strings.ReplaceAll(name, ":", "")+"-peaks.json")
	}
	mgr, err := memory.New(cfg)
	if err != nil {
		return nil, err
	}
	if s, ok := eng.(interface{ SetStateDir(string) }); ok && state != "" {
		s.SetStateDir(state)
	}
	// An engine that fits models larger than the budget (sequential
	// loading) gets the manager, and the cache lets such models load.
	if s, ok := eng.(interface{ SetMemory(*memory.Manager) }); ok {
		s.SetMemory(mgr)
	}
	if l, ok := eng.(interface{ LoadsLarger() bool }); ok && l.LoadsLarger() {
		cache.SetLoadsLarger(true)
	}
	// The device's allocator refuses allocations past the budget, so that
	// a budget below the card's memory behaves like a smaller card.
	if d, ok := be.(interface{ SetMemoryLimit(int64) }); ok {
		d.SetMemoryLimit(budget)
	}
	cache.SetHostBudget(host)
	cache.SetMeter(func() int64 { return mgr.TierBytes(memory.GPU) })
	// A model whose components are known (loaded before) adds only what is
	// not already on the device.
	known, _ := eng.(interface {
		KnownComponents(path string) ([]memory.Component, bool)
	})
	cache.SetEstimator(func(id string, size int64) int64 {
		if placed := mgr.Components(id); placed != nil {
			return mgr.AddedBytes(memory.GPU, placed)
		}
		if known != nil && pathOf != nil {
			if path, ok := pathOf(id); ok {
				if comps, ok := known.KnownComponents(path); ok {
					return mgr.AddedBytes(memory.GPU, comps)
				}
			}
		}
		return size
	})
	cache.SetObserver(func(id string, m modelcache.Resident, bytes int64, tier memory.Tier) {
		comps := []memory.Component{{Kind: "model", Bytes: bytes}} // not shareable
		if c, ok := m.(interface{ Components() []memory.Component }); ok {
			comps = c.Components()
		}
		_ = mgr.Place(id, tier, comps) // tiers come from the cache: always valid
	})
	return mgr, nil
}
