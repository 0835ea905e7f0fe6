package conformance

import (
	"bytes"
	"context"
	"os"
	"reflect"
	"strings"
	"testing"

	wb "github.com/kiln-project/kiln/internal/wasmbuild"
	nodeswasm "github.com/kiln-project/kiln/nodes-wasm"
	"github.com/kiln-project/kiln/policies"
	"github.com/kiln-project/kiln/policies/builtin"
	"github.com/kiln-project/kiln/wasmhost"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

// The shared test machine is slow: budgets are generous here; the
// defaults apply in production.
func opts(t *testing.T) Options {
	return Options{CacheDir: cache(t), Budgets: Budgets{PolicyCall: 5e9, NodeCall: 20e9}}
}

func cache(t *testing.T) string {
	dir := os.Getenv("KILN_TEST_WASM_CACHE")
	if dir == "" {
		dir = t.TempDir()
	}
	return dir
}

func TestBuiltinsPass(t *testing.T) {
	for name, wasm := range map[string][]byte{"policies": policies.Builtin(), "nodes": nodeswasm.Builtin()} {
		rep, err := Test(context.Background(), name, wasm, opts(t))
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		_ = rep.Write(&buf)
		if !rep.Passed {
			t.Fatalf("%s failed conformance:\n%s", name, buf.String())
		}
		if len(rep.Checks) < 8 || !strings.Contains(buf.String(), "PASS") {
			t.Fatalf("%s: too few checks:\n%s", name, buf.String())
		}
	}
}

// The built-in policies answer every scenario exactly as the native code.
func TestBuiltinScenariosMatchNative(t *testing.T) {
	h, err := wasmhost.New(context.Background(), wasmhost.Config{CacheDir: cache(t), PolicyTimeout: 5e9})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	m, err := h.Load(context.Background(), wasmhost.Spec{Name: "builtin", Kind: wasmhost.KindPolicy}, policies.Builtin())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, in := range BatchingInputs() {
		got, o := m.CallBatching(ctx, in)
		if want := builtin.Batching(in); !o.OK() || !reflect.DeepEqual(got, want) {
			t.Fatalf("batching %q: %+v (%v), native %+v", name, got, o.Err, want)
		}
	}
	for name, in := range EvictionInputs() {
		got, o := m.CallEviction(ctx, in)
		if want := builtin.Eviction(in); !o.OK() || !reflect.DeepEqual(got, want) {
			t.Fatalf("eviction %q: %+v (%v), native %+v", name, got, o.Err, want)
		}
	}
	for name, in := range QualityInputs() {
		got, o := m.CallQuality(ctx, in)
		if want := builtin.Quality(in); !o.OK() || !reflect.DeepEqual(got, want) {
			t.Fatalf("quality %q: %+v (%v), native %+v", name, got, o.Err, want)
		}
	}
}

func module(hook wb.Func, data ...wb.Data) []byte {
	hook.Params, hook.Results = []byte{wb.I32, wb.I32}, []byte{wb.I64}
	if hook.Export == "" {
		hook.Export = abi.HookBatching.Export()
	}
	return (&wb.Module{MemoryPages: 4, MemoryExport: abi.ExportMemory, Data: data, Funcs: []wb.Func{
		{Results: []byte{wb.I32}, Body: wb.I32Const(1), Export: abi.ExportVersion},
		{Params: []byte{wb.I32}, Results: []byte{wb.I32}, Body: wb.I32Const(1024), Export: abi.ExportAlloc},
		hook,
	}}).Bytes()
}

func TestBadModulesFail(t *testing.T) {
	ctx := context.Background()
	// Always dispatches job 0: valid for every scenario.
	out := []byte{abi.StatusOK, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}
	good := module(wb.Func{Body: wb.I64Const(int64(uint64(200000)<<32 | uint64(len(out))))}, wb.Data{Offset: 200000, Bytes: out})
	rep, err := Test(ctx, "first-job", good, opts(t))
	if err != nil || !rep.Passed {
		t.Fatalf("a simple valid policy failed: %v %v", err, rep.Failures())
	}
	loop := module(wb.Func{Body: wb.Cat([]byte{wb.OpLoop, wb.BlockEmpty, wb.OpBr, 0, wb.OpEnd}, wb.I64Const(0))})
	o := opts(t)
	o.Budgets.PolicyCall = 20e6
	rep, err = Test(ctx, "loop", loop, o)
	if err != nil || rep.Passed || !strings.Contains(strings.Join(rep.Failures(), " "), "timeout") {
		t.Fatalf("an infinite loop passed: %v %v", err, rep.Failures())
	}
	bad := (&wb.Module{MemoryPages: 1, MemoryExport: "memory", Imports: []wb.Import{{Module: "env", Name: "socket", Results: []byte{wb.I32}}},
		Funcs: []wb.Func{{Results: []byte{wb.I32}, Body: wb.I32Const(1), Export: abi.ExportVersion}}}).Bytes()
	rep, err = Test(ctx, "bad", bad, opts(t))
	if err != nil || rep.Passed || len(rep.Rejected) == 0 || !strings.Contains(rep.Err().Error(), "unknown import env.socket") {
		t.Fatalf("bad module: %v %+v", err, rep)
	}
}
