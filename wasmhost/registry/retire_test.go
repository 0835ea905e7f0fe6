package registry

import (
	"context"
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
