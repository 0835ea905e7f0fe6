package registry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-project/kiln/internal/guestbuild"
	wb "github.com/kiln-project/kiln/internal/wasmbuild"
	nodeswasm "github.com/kiln-project/kiln/nodes-wasm"
	nodes "github.com/kiln-project/kiln/nodes-wasm/builtin"
	"github.com/kiln-project/kiln/policies"
	"github.com/kiln-project/kiln/policies/builtin"
	"github.com/kiln-project/kiln/wasmhost"
	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/kiln-project/kiln/wasmhost/conformance"
)

var (
	dirOnce  sync.Once
	testDir  string
	builder  *guestbuild.Builder
	quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))
)

func TestMain(m *testing.M) {
	code := m.Run()
	if testDir != "" {
		os.RemoveAll(testDir)
	}
	os.Exit(code)
}

func shared(t testing.TB) string {
	dirOnce.Do(func() {
		d, err := os.MkdirTemp("", "kiln-registry-test-")
		if err != nil {
			t.Fatal(err)
		}
		testDir = d
		builder = guestbuild.New(d)
	})
	return testDir
}

func build(t testing.TB, pkg string) []byte {
	shared(t)
	return builder.Build(t, pkg)
}

func newRegistry(t testing.TB, store Store) *Registry {
	t.Helper()
	dir := shared(t)
	// Kiln's built-ins as the composition root hands them in
	// (app/wasmadapter.Natives and Builtins, which this package cannot import).
	natives := wasmhost.Natives{
		Batching: builtin.Batching, Eviction: builtin.Eviction, Quality: builtin.Quality,
		NodeHook: nodes.Hook, NodeParams: nodes.CheckParams, NodePre: nodes.Pre, NodePost: nodes.Post,
	}
	h, err := wasmhost.New(context.Background(), wasmhost.Config{CacheDir: dir, PolicyTimeout: 10 * time.Second, NodeTimeout: 20 * time.Second, Logger: quietLog, Natives: natives})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(context.Background(), Config{Store: store, Host: h, CacheDir: dir, Logger: quietLog,
		BuiltinPolicies: Builtin{Name: policies.BuiltinName, Wasm: policies.Builtin()},
		BuiltinNodes:    Builtin{Name: nodeswasm.BuiltinName, Wasm: nodeswasm.Builtin()},
		Budgets:         conformance.Budgets{PolicyCall: 5 * time.Second, NodeCall: 20 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.Close(context.Background())
		_ = h.Close(context.Background())
	})
	return r
}

// firstJob is a hand-assembled batching policy that always dispatches job 0.
func firstJob() []byte { return wb.FirstJob() }

func batchingInput(n int) *abi.BatchingInput {
	in := conformance.BatchingInputs()["64 jobs, two keys"]
	in.Jobs = in.Jobs[:n]
	return in
}

func TestUploadActivateRollback(t *testing.T) {
	ctx := context.Background()
	store, err := NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := newRegistry(t, store)

	// Nothing active: the built-in module answers.
	in := batchingInput(10)
	out, o := r.Batching(ctx, in)
	if !o.OK() || len(out.Jobs) == 0 && !out.Wait {
		t.Fatalf("default batching: %+v %v", out, o.Err)
	}
	if n := r.cfg.Host.Metrics().Calls("builtin", abi.HookBatching, wasmhost.ResultOK); n != 1 {
		t.Fatalf("built-in calls %d", n)
	}

	v1, err := r.Upload(ctx, UploadRequest{Kind: KindBatching, Name: "fair", Wasm: policies.Builtin(), Mode: ModeActivate})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := r.Upload(ctx, UploadRequest{Kind: KindBatching, Name: "first", Wasm: firstJob(), Mode: ModeActivate})
	if err != nil {
		t.Fatal(err)
	}
	if v1.Version != 1 || v2.Version != 1 || v1.Checks == 0 {
		t.Fatalf("versions %+v %+v", v1, v2)
	}
	out, o = r.Batching(ctx, in)
	if !o.OK() || len(out.Jobs) != 1 || out.Jobs[0] != 0 {
		t.Fatalf("first@v1 active: %+v %v", out, o.Err)
	}
	if n := r.cfg.Host.Metrics().Calls("batching/first@v1", abi.HookBatching, wasmhost.ResultOK); n != 1 {
		t.Fatalf("first@v1 calls %d", n)
	}
	info, err := r.Slot(ctx, "", KindBatching, "")
	if err != nil || info.Active == nil || *info.Active != (Ref{"first", 1}) || len(info.History) != 1 {
		t.Fatalf("slot %+v %v", info, err)
	}
	// A second version of fair; activate it, roll back to first, then to
	// fair@v1, then to the built-in default.
	if _, err := r.Upload(ctx, UploadRequest{Kind: KindBatching, Name: "fair", Wasm: policies.Builtin()}); err != nil {
		t.Fatal(err)
	}
	if err := r.Activate(ctx, "", KindBatching, Ref{"fair", 2}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []*Ref{{"first", 1}, {"fair", 1}, nil} {
		got, err := r.Rollback(ctx, "", KindBatching, "")
		if err != nil || (got == nil) != (want == nil) || (got != nil && *got != *want) {
			t.Fatalf("rollback: %v %v, want %v", got, err, want)
		}
	}
	if _, err := r.Rollback(ctx, "", KindBatching, ""); !errors.Is(err, ErrNoPrevious) {
		t.Fatalf("rollback past the default: %v", err)
	}
	if err := r.Activate(ctx, "", KindBatching, Ref{"fair", 9}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("activate a missing version: %v", err)
	}
	vs, _ := r.Versions(ctx, "", KindBatching, "fair")
	names, _ := r.Names(ctx, "", KindBatching)
	if len(vs) != 2 || strings.Join(names, ",") != "fair,first" {
		t.Fatalf("versions %v names %v", vs, names)
	}

	// The state survives a restart: a new registry over the same store.
	if err := r.Activate(ctx, "", KindBatching, Ref{"first", 1}); err != nil {
		t.Fatal(err)
	}
	r2 := newRegistry(t, store)
	out, o = r2.Batching(ctx, in)
	if !o.OK() || len(out.Jobs) != 1 || out.Jobs[0] != 0 {
		t.Fatalf("after restart: %+v %v", out, o.Err)
	}
}

func TestUploadValidation(t *testing.T) {
	ctx := context.Background()
	r := newRegistry(t, NewMemStore())
	loop := (&wb.Module{MemoryPages: 1, MemoryExport: abi.ExportMemory, Funcs: []wb.Func{
		{Results: []byte{wb.I32}, Body: wb.I32Const(1), Export: abi.ExportVersion},
		{Params: []byte{wb.I32}, Results: []byte{wb.I32}, Body: wb.I32Const(1024), Export: abi.ExportAlloc},
		{Params: []byte{wb.I32, wb.I32}, Results: []byte{wb.I64}, Body: wb.Cat([]byte{wb.OpLoop, wb.BlockEmpty, wb.OpBr, 0, wb.OpEnd}, wb.I64Const(0)), Export: abi.HookQuality.Export()},
	}}).Bytes()
	r.cfg.Budgets.PolicyCall = 50 * time.Millisecond
	_, err := r.Upload(ctx, UploadRequest{Scope: "acme", Kind: KindQuality, Name: "spin", Wasm: loop})
	var rej *RejectedError
	if !errors.As(err, &rej) || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("looping module: %v", err)
	}
	r.cfg.Budgets.PolicyCall = 5 * time.Second
	for _, c := range []struct {
		req  UploadRequest
		want error
		msg  string
	}{
		{UploadRequest{Scope: "acme", Kind: KindBatching, Name: "x", Wasm: policies.Builtin()}, ErrForbidden, "operator"},
		{UploadRequest{Scope: "acme", Kind: KindNode, Name: "resize", Wasm: policies.Builtin()}, ErrForbidden, "built-in"},
		{UploadRequest{Kind: KindQuality, Name: "Bad Name", Wasm: policies.Builtin()}, ErrInvalid, "name"},
		{UploadRequest{Kind: KindEviction, Name: "first", Wasm: firstJob()}, nil, "does not export kiln_eviction"},
		{UploadRequest{Kind: KindNode, Name: "pol", Wasm: policies.Builtin()}, nil, "exports no node hook"},
		{UploadRequest{Kind: KindQuality, Name: "junk", Wasm: []byte("\x00asm junk")}, nil, "not a valid module"},
	} {
		_, err := r.Upload(ctx, c.req)
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.msg) {
			t.Fatalf("%+v: %v, want %v mentioning %q", c.req.Name, err, c.want, c.msg)
		}
	}
	// Nothing was stored.
	if keys, _ := r.cfg.Store.List(ctx, "v1/"); len(keys) != 0 {
		t.Fatalf("rejected uploads left %v", keys)
	}
}

func TestShadowMode(t *testing.T) {
	ctx := context.Background()
	r := newRegistry(t, NewMemStore())
	// The candidate always dispatches job 0; the active (built-in) policy
	// agrees only when job 0 alone is its choice.
	if _, err := r.Upload(ctx, UploadRequest{Kind: KindBatching, Name: "first", Wasm: firstJob(), Mode: ModeShadow}); err != nil {
		t.Fatal(err)
	}
	const calls = 20
	for i := 0; i < calls; i++ {
		in := batchingInput(1 + i%8)
		in.MaxWaitUS = 1 // dispatch at once
		out, o := r.Batching(ctx, in)
		if want := builtin.Batching(in); !o.OK() || len(out.Jobs) != len(want.Jobs) {
			t.Fatalf("the active answer changed under shadow: %+v vs %+v", out, want)
		}
		r.WaitShadows() // keep every call shadowed (none skipped)
	}
	info, err := r.Slot(ctx, "", KindBatching, "")
	if err != nil || info.Shadow == nil {
		t.Fatalf("slot %+v %v", info, err)
	}
	s := info.Shadow
	if s.Compared != calls || s.Agreed == 0 || s.Disagreed == 0 || s.Agreement <= 0 || s.Agreement >= 1 {
		t.Fatalf("shadow stats %+v", s)
	}
	if s.ActiveP50US <= 0 || s.ShadowP50US <= 0 || s.LastDisagreement == nil {
		t.Fatalf("shadow timing %+v", s)
	}
	// Promote the candidate: it answers, and shadow mode ends.
	if err := r.Activate(ctx, "", KindBatching, Ref{"first", 1}); err != nil {
		t.Fatal(err)
	}
	if info, _ := r.Slot(ctx, "", KindBatching, ""); info.Shadow != nil || info.Active == nil {
		t.Fatalf("after promotion: %+v", info)
	}
}

func TestTenantPoliciesAndNodes(t *testing.T) {
	ctx := context.Background()
	r := newRegistry(t, NewMemStore())
	q := conformance.QualityInputs()["overload"]
	// The tenant's quality policy serves only that tenant.
	if _, err := r.Upload(ctx, UploadRequest{Scope: "acme", Kind: KindQuality, Name: "mine", Wasm: policies.Builtin(), Mode: ModeActivate}); err != nil {
		t.Fatal(err)
	}
	r.Quality(ctx, "acme", q)
	r.Quality(ctx, "globex", q)
	m := r.cfg.Host.Metrics()
	if m.Calls(r.TenantPseudonym("acme")+"/quality/"+r.ModulePseudonym("acme", KindQuality, "mine")+"@v1", abi.HookQuality, wasmhost.ResultOK) != 1 || m.Calls("builtin", abi.HookQuality, wasmhost.ResultOK) != 1 {
		t.Fatalf("quality routing: %+v", m.Snapshot())
	}
	// Metrics never name the tenant (anyone may read /metrics).
	var text strings.Builder
	if err := m.WritePrometheus(&text); err != nil || strings.Contains(text.String(), "acme") || strings.Contains(text.String(), "mine") {
		t.Fatalf("metrics name the tenant: %v\n%s", err, text.String())
	}
	// The pseudonym is stable for a store and differs between tenants.
	if r2 := newRegistry(t, r.cfg.Store); r2.TenantPseudonym("acme") != r.TenantPseudonym("acme") || r.TenantPseudonym("acme") == r.TenantPseudonym("globex") {
		t.Fatal("pseudonyms are not stable per store or not distinct")
	}

	invert := build(t, "github.com/kiln-project/kiln/nodes-wasm/examples/invert")
	shout := build(t, "github.com/kiln-project/kiln/nodes-wasm/examples/shout")
	for name, w := range map[string][]byte{"invert": invert, "shout": shout} {
		if _, err := r.Upload(ctx, UploadRequest{Scope: "acme", Kind: KindNode, Name: name, Wasm: w, Mode: ModeActivate}); err != nil {
			t.Fatal(err)
		}
	}
	chain := Chain{
		Pre:  []NodeSpec{{Name: "shout"}, {Name: "style", Params: map[string]string{"preset": "anime"}}},
		Post: []NodeSpec{{Name: "resize", Params: map[string]string{"width": "32"}}, {Name: "invert"}, {Name: "grayscale", Params: map[string]string{"amount": "0"}}},
	}
	if err := r.CheckChain(ctx, "acme", chain); err != nil {
		t.Fatal(err)
	}
	if err := r.CheckChain(ctx, "globex", chain); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another tenant's node: %v", err)
	}
	if err := r.CheckChain(ctx, "acme", Chain{Pre: []NodeSpec{{Name: "invert"}}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("post node in the pre chain: %v", err)
	}
	if err := r.CheckChain(ctx, "acme", Chain{Post: []NodeSpec{{Name: "resize", Params: map[string]string{"width": "x"}}}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad built-in params: %v", err)
	}
	req, err := r.RunPre(ctx, "acme", chain.Pre, abi.PreInput{Prompt: "a cat", Width: 512, Height: 512, Steps: 20, Guidance: 7, Sampler: "euler", Seed: 1})
	if err != nil || !strings.HasPrefix(req.Prompt, "A CAT, anime style") {
		t.Fatalf("pre chain: %q %v", req.Prompt, err)
	}
	if _, err := r.RunPre(ctx, "acme", chain.Pre, abi.PreInput{Prompt: "  ", Width: 512, Height: 512, Steps: 20}); err == nil ||
		!strings.Contains(err.Error(), "node shout: shout: the prompt is empty") {
		t.Fatalf("rejection: %v", err)
	}
	im := abi.Image{Width: 64, Height: 64, Pix: make([]byte, 64*64*4)}
	for i := range im.Pix {
		im.Pix[i] = 200
	}
	img, err := r.RunPost(ctx, "acme", chain.Post, abi.PostInput{Image: im})
	if err != nil || img.Width != 32 || img.Height != 32 || img.Pix[0] != 55 || img.Pix[3] != 200 {
		t.Fatalf("post chain: %d×%d %v %v", img.Width, img.Height, img.Pix[:4], err)
	}
}

func TestExamplePolicyPasses(t *testing.T) {
	w := build(t, "github.com/kiln-project/kiln/policies/examples/fifo")
	rep, err := conformance.Test(context.Background(), "fifo", w, conformance.Options{CacheDir: shared(t), Budgets: conformance.Budgets{PolicyCall: 5 * time.Second}})
	if err != nil || !rep.Passed {
		t.Fatalf("fifo example: %v %v", err, rep.Failures())
	}
}
