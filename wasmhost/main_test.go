package wasmhost

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	nodeswasm "github.com/kiln-project/kiln/nodes-wasm"
	nodes "github.com/kiln-project/kiln/nodes-wasm/builtin"
	"github.com/kiln-project/kiln/policies"
	"github.com/kiln-project/kiln/policies/builtin"
)

// testNatives are Kiln's built-ins as the composition root hands them in
// (app/wasmadapter.Natives, which this package cannot import).
func testNatives() Natives {
	return Natives{
		Batching: builtin.Batching, Eviction: builtin.Eviction, Quality: builtin.Quality,
		NodeHook: nodes.Hook, NodeParams: nodes.CheckParams, NodePre: nodes.Pre, NodePost: nodes.Post,
	}
}

// The built-in modules are compiled once per test binary: each test gets
// its own Host (fresh metrics and health) sharing one compilation cache
// directory.
var (
	cacheOnce sync.Once
	cacheDir  string
)

func testCacheDir(t testing.TB) string {
	cacheOnce.Do(func() {
		dir, err := mkTemp()
		if err != nil {
			t.Fatal(err)
		}
		cacheDir = dir
	})
	return cacheDir
}

func newTestHost(t testing.TB, cfg Config) *Host {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = testCacheDir(t)
	}
	// The test machine is shared and slow: deadlines are generous unless
	// a test is about them.
	if cfg.PolicyTimeout == 0 {
		cfg.PolicyTimeout = 10 * time.Second
	}
	if cfg.NodeTimeout == 0 {
		cfg.NodeTimeout = 20 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Natives.Batching == nil {
		cfg.Natives = testNatives()
	}
	h, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	return h
}

func loadBuiltinPolicies(t testing.TB, h *Host) *Module {
	t.Helper()
	m, err := h.Load(context.Background(), Spec{Name: policies.BuiltinName, Kind: KindPolicy}, policies.Builtin())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func loadBuiltinNodes(t testing.TB, h *Host) *Module {
	t.Helper()
	m, err := h.Load(context.Background(), Spec{Name: nodeswasm.BuiltinName, Label: "builtin-nodes", Kind: KindNode}, nodeswasm.Builtin())
	if err != nil {
		t.Fatal(err)
	}
	return m
}
