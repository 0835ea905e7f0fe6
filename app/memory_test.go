package app

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/worker"
	"github.com/kiln-project/kiln/worker/modelcache"
)

func TestHostBudget(t *testing.T) {
	const ram = 100 << 30
	if got := hostBudget(config.Budget{Auto: true}, ram, 2, true); got != 25<<30/2 {
		t.Fatalf("auto on 2 GPUs: %d", got)
	}
	if got := hostBudget(config.Budget{Bytes: 8 << 30}, ram, 4, true); got != 2<<30 {
		t.Fatalf("8GiB on 4 GPUs: %d", got)
	}
	if got := hostBudget(config.Budget{Percent: 50}, ram, 1, false); got != 0 {
		t.Fatalf("CPU: %d", got)
	}
}

type sharedModel struct{ comps []memory.Component }

func (m *sharedModel) Close() error                   { return nil }
func (m *sharedModel) Components() []memory.Component { return m.comps }

// knowingEngine knows the components of models by path, as sdengine does
// from its hash cache.
type knowingEngine struct{ comps map[string][]memory.Component }

func (knowingEngine) Device() string { return "cuda:0" }
func (knowingEngine) Load(context.Context, catalog.Model) (worker.Model, error) {
	return nil, errors.New("not used")
}
func (e knowingEngine) KnownComponents(path string) ([]memory.Component, bool) {
	c, ok := e.comps[path]
	return c, ok
}

type plainModel struct{}

func (plainModel) Close() error { return nil }

func TestNewMemoryConnectsCacheAndManager(t *testing.T) {
	cache := modelcache.New(100, nil)
	dir := t.TempDir()
	vae := memory.Component{Kind: "vae", Hash: "v", Bytes: 40}
	compsOf := func(id string) []memory.Component {
		return []memory.Component{vae, {Kind: "unet", Hash: id, Bytes: 20}}
	}
	eng := knowingEngine{comps: map[string][]memory.Component{"/models/b": compsOf("b")}}
	mgr, err := newMemory("cuda:0", cpu.New(), 100, 50, dir, cache, eng, func(id string) (string, bool) { return "/models/" + id, true })
	if err != nil {
		t.Fatal(err)
	}
	load := func(r modelcache.Resident) modelcache.Loader {
		return func(context.Context) (modelcache.Resident, error) { return r, nil }
	}
	for _, id := range []string{"a", "b"} {
		_, release, err := cache.Acquire(context.Background(), id, 60, load(&sharedModel{comps: compsOf(id)}))
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	// Two models of 60 bytes in a budget of 100: the engine knew b shares
	// a's VAE, so b's load evicted nothing, and the VAE counts once.
	if s := cache.Stats(); s.Resident != 2 || mgr.TierBytes(memory.GPU) != 80 || mgr.FreeBytes() != 20 {
		t.Fatalf("stats %+v gpu %d free %d", s, mgr.TierBytes(memory.GPU), mgr.FreeBytes())
	}
	// A model without components counts with the cache's size.
	_, release, err := cache.Acquire(context.Background(), "c", 20, load(plainModel{}))
	if err != nil {
		t.Fatal(err)
	}
	release()
	if mgr.TierBytes(memory.GPU) != 100 {
		t.Fatalf("gpu %d", mgr.TierBytes(memory.GPU))
	}
	if cache.Stats().HostBudget != 50 || mgr.HostBudget() != 50 {
		t.Fatal("host budget not applied")
	}
	if err := mgr.RecordPeak(memory.Batch{Model: "a", Images: 1, Width: 8, Height: 8}, 5); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "memory", "cuda0-peaks.json")); len(m) != 1 {
		t.Fatal("peak file not under the data dir")
	}
}
