package registry

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kiln-project/kiln/policies"
)

// TestReplacedVersionsLeaveMemory: every activation keeps only the
// modules its slot names loaded; replaced versions are closed after the
// retire delay, and a rollback loads its version again (found by the
// soak: each upload of a new version kept ~20 MiB of RSS for good).
func TestReplacedVersionsLeaveMemory(t *testing.T) {
	ctx := context.Background()
	r := newRegistry(t, NewMemStore())
	r.cfg.RetireAfter = time.Millisecond
	for i := 0; i < 4; i++ {
		if _, err := r.Upload(ctx, UploadRequest{Kind: KindBatching, Name: "fair", Wasm: policies.Builtin(), Mode: ModeActivate}); err != nil {
			t.Fatal(err)
		}
	}
	loaded := func() []modKey {
		r.smu.RLock()
		defer r.smu.RUnlock()
		var ks []modKey
		for k := range r.modules {
			ks = append(ks, k)
		}
		return ks
	}
	if ks := loaded(); len(ks) != 1 || ks[0].ref != (Ref{"fair", 4}) {
		t.Fatalf("loaded after 4 activations: %v", ks)
	}
	if _, err := r.Rollback(ctx, "", KindBatching, ""); err != nil {
		t.Fatal(err)
	}
	if out, o := r.Batching(ctx, batchingInput(4)); !o.OK() {
		t.Fatalf("after rollback: %+v %v", out, o.Err)
	}
	if ks := loaded(); len(ks) != 1 || ks[0].ref != (Ref{"fair", 3}) {
		t.Fatalf("loaded after a rollback: %v", ks)
	}
}

// TestOldVersionsArePruned: the store keeps at most KeepVersions versions
// of a name, never one its slot still names; a pruned version is gone
// from the listing and from the store (found by the soak: every upload
// stayed in the object store for good).
func TestOldVersionsArePruned(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	r := newRegistry(t, store)
	r.cfg.KeepVersions = 3
	if _, err := r.Upload(ctx, UploadRequest{Kind: KindBatching, Name: "fair", Wasm: policies.Builtin(), Mode: ModeActivate}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := r.Upload(ctx, UploadRequest{Kind: KindBatching, Name: "fair", Wasm: policies.Builtin()}); err != nil {
			t.Fatal(err)
		}
	}
	vs, err := r.Versions(ctx, "", KindBatching, "fair")
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, v := range vs {
		got = append(got, v.Version)
	}
	if len(got) != 3 || got[0] != 1 || got[1] != 5 || got[2] != 6 {
		t.Fatalf("versions kept: %v, want [1 5 6] (1 is active)", got)
	}
	for _, n := range []int{2, 3, 4} {
		if _, err := store.Get(ctx, moduleKey("", KindBatching, Ref{"fair", n})); !errors.Is(err, ErrNotFound) {
			t.Fatalf("version %d still stored: %v", n, err)
		}
	}
	if err := r.Activate(ctx, "", KindBatching, Ref{"fair", 3}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("activating a pruned version: %v", err)
	}
	if err := r.Activate(ctx, "", KindBatching, Ref{"fair", 6}); err != nil {
		t.Fatalf("activating a kept version: %v", err)
	}
	if out, o := r.Batching(ctx, batchingInput(4)); !o.OK() {
		t.Fatalf("after activating v6: %+v %v", out, o.Err)
	}
}
