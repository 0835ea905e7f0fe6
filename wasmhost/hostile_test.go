package wasmhost

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	wb "github.com/kiln-project/kiln/internal/wasmbuild"
	"github.com/kiln-project/kiln/policies/builtin"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

// abiModule is a minimal hand-assembled policy: one page of memory, the
// version marker (returning version), an allocator that always answers
// 1024, and a batching hook with the given body.
func abiModule(version int32, hook wb.Func, data ...wb.Data) *wb.Module {
	if hook.Export == "" {
		hook.Export = abi.HookBatching.Export()
	}
	if hook.Params == nil && hook.Results == nil {
		hook.Params, hook.Results = []byte{wb.I32, wb.I32}, []byte{wb.I64}
	}
	return &wb.Module{
		MemoryPages:  1,
		MemoryExport: abi.ExportMemory,
		Data:         data,
		Funcs: []wb.Func{
			{Results: []byte{wb.I32}, Body: wb.I32Const(version), Export: abi.ExportVersion},
			{Params: []byte{wb.I32}, Results: []byte{wb.I32}, Body: wb.I32Const(1024), Export: abi.ExportAlloc},
			hook,
		},
	}
}

func packed(ptr, n uint32) []byte { return wb.I64Const(int64(uint64(ptr)<<32 | uint64(n))) }

// answer returns a hook that answers with the bytes placed at 32 KiB
// (above where the host writes the input).
func answer(out []byte) (wb.Func, wb.Data) {
	return wb.Func{Body: packed(32768, uint32(len(out)))}, wb.Data{Offset: 32768, Bytes: out}
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func TestHostileGuestsFallBackAndAreCounted(t *testing.T) {
	loop := wb.Func{Body: wb.Cat([]byte{wb.OpLoop, wb.BlockEmpty, wb.OpBr, 0, wb.OpEnd}, wb.I64Const(0))}
	grow := wb.Func{Body: wb.Cat([]byte{wb.OpLoop, wb.BlockEmpty}, wb.I32Const(8), []byte{wb.OpMemoryGrow, 0},
		wb.I32Const(-1), []byte{wb.OpI32Ne, wb.OpBrIf, 0, wb.OpEnd, wb.OpUnreachable})}
	trap := wb.Func{Body: []byte{wb.OpUnreachable}}
	oversized := wb.Func{Body: packed(1024, 1<<30)}
	outside := wb.Func{Body: packed(65000, 1000)}
	badIndex, badIndexData := answer(wb.Cat([]byte{abi.StatusOK, 0}, make([]byte, 8), le32(1), le32(999)))
	longWait, longWaitData := answer(wb.Cat([]byte{abi.StatusOK, 1}, binary.LittleEndian.AppendUint64(nil, abi.MaxWaitUS+1), le32(0)))
	garbage, garbageData := answer([]byte{7, 7, 7})
	trailing, trailingData := answer(wb.Cat([]byte{abi.StatusOK, 1}, binary.LittleEndian.AppendUint64(nil, 5), le32(0), []byte{9}))
	guestErr, guestErrData := answer(wb.Cat([]byte{abi.StatusError}, le32(4), []byte("boom")))

	cases := []struct {
		name string
		mod  *wb.Module
		want Result
		msg  string
	}{
		{"infinite loop", abiModule(1, loop), ResultTimeout, ""},
		{"memory growth to the cap", abiModule(1, grow), ResultOOM, ""},
		{"trap", abiModule(1, trap), ResultTrap, "unreachable"},
		{"oversized output", abiModule(1, oversized), ResultInvalid, "exceeds the limit"},
		{"output outside memory", abiModule(1, outside), ResultInvalid, "outside memory"},
		{"out-of-range job index", abiModule(1, badIndex, badIndexData), ResultInvalid, "out of range"},
		{"wait beyond the limit", abiModule(1, longWait, longWaitData), ResultInvalid, "wait of"},
		{"garbage output", abiModule(1, garbage, garbageData), ResultInvalid, "unknown status"},
		{"trailing bytes", abiModule(1, trailing, trailingData), ResultInvalid, "trailing"},
		{"guest error", abiModule(1, guestErr, guestErrData), ResultGuestError, "boom"},
	}
	// A small memory cap (64 pages) keeps the growth case quick.
	h := newTestHost(t, Config{PolicyTimeout: 250 * time.Millisecond, PolicyMemoryPages: 64, FailureThreshold: 100})
	ctx := context.Background()
	in := sampleBatching(16)
	want := builtin.Batching(in)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := h.Load(ctx, Spec{Name: c.name, Kind: KindPolicy}, c.mod.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 2; i++ {
				got, o := m.Batching(ctx, in)
				if o.Result != c.want || !o.Fallback {
					t.Fatalf("call %d: result %s (%v), want %s with fallback", i, o.Result, o.Err, c.want)
				}
				if c.msg != "" && !strings.Contains(o.Err.Error(), c.msg) {
					t.Fatalf("error %q does not mention %q", o.Err, c.msg)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("fallback answer %+v, want the built-in's %+v", got, want)
				}
			}
			if n := h.Metrics().Calls(c.name, abi.HookBatching, c.want); n != 2 {
				t.Fatalf("counted %d calls with result %s, want 2", n, c.want)
			}
			if n := h.Metrics().Discards(c.name); n != 2 {
				t.Fatalf("discarded %d instances, want 2", n)
			}
		})
	}
	// Another tenant's runtime is unaffected: the built-in module answers.
	good := loadBuiltinPolicies(t, newTestHost(t, Config{}))
	if _, o := good.Batching(ctx, in); !o.OK() {
		t.Fatalf("built-in after hostile guests: %v %v", o.Result, o.Err)
	}
}

func TestHostileModulesRejectedAtLoad(t *testing.T) {
	trap := wb.Func{Body: []byte{wb.OpUnreachable}}
	wrongHook := abiModule(1, wb.Func{Params: []byte{wb.I32}, Results: []byte{wb.I32}, Body: wb.I32Const(0)})
	wrongAlloc := abiModule(1, trap)
	wrongAlloc.Funcs[1] = wb.Func{Params: []byte{wb.I64}, Results: []byte{wb.I32}, Body: wb.I32Const(0), Export: abi.ExportAlloc}
	noVersion := abiModule(1, trap)
	noVersion.Funcs[0].Export = "version"
	unknownEnv := abiModule(1, trap)
	unknownEnv.Imports = []wb.Import{{Module: "env", Name: "now", Results: []byte{wb.I64}}}
	unknownWASI := abiModule(1, trap)
	unknownWASI.Imports = []wb.Import{{Module: abi.WASIModule, Name: "path_open", Params: []byte{wb.I32, wb.I32, wb.I32, wb.I32, wb.I32, wb.I64, wb.I64, wb.I32, wb.I32}, Results: []byte{wb.I32}}}
	badSigImport := abiModule(1, trap)
	badSigImport.Imports = []wb.Import{{Module: abi.WASIModule, Name: "fd_write", Params: []byte{wb.I32}, Results: []byte{wb.I32}}}
	noMemory := abiModule(1, trap)
	noMemory.MemoryExport = ""
	noHook := abiModule(1, wb.Func{Params: []byte{wb.I32, wb.I32}, Results: []byte{wb.I64}, Body: wb.I64Const(0), Export: "kiln_something"})
	nodeAsPolicy := abiModule(1, wb.Func{Params: []byte{wb.I32, wb.I32}, Results: []byte{wb.I64}, Body: wb.I64Const(0), Export: abi.HookNodePost.Export()})
	initTrap := abiModule(1, trap)
	initTrap.Funcs = append(initTrap.Funcs, wb.Func{Body: []byte{wb.OpUnreachable}, Export: abi.ExportInitialize})
	bigMemory := abiModule(1, trap)
	bigMemory.MemoryPages = 100000

	cases := []struct {
		name string
		wasm []byte
		want string
	}{
		{"not wasm", []byte("hello"), "not a valid module"},
		{"wrong hook signature", wrongHook.Bytes(), "export kiln_batching has signature (i32)->(i32), want (i32,i32)->(i64)"},
		{"wrong allocator signature", wrongAlloc.Bytes(), "export kiln_alloc has signature (i64)->(i32)"},
		{"no version marker", noVersion.Bytes(), "missing export kiln_abi_version"},
		{"version 2", abiModule(2, trap).Bytes(), "ABI version 2"},
		{"unknown import", unknownEnv.Bytes(), "unknown import env.now"},
		{"filesystem import", unknownWASI.Bytes(), "unknown import wasi_snapshot_preview1.path_open"},
		{"import with wrong signature", badSigImport.Bytes(), "import wasi_snapshot_preview1.fd_write has signature"},
		{"memory not exported", noMemory.Bytes(), "does not export its memory"},
		{"no hook", noHook.Bytes(), "exports no policy hook"},
		{"node hook uploaded as policy", nodeAsPolicy.Bytes(), "exports no policy hook"},
		{"initialiser traps", initTrap.Bytes(), "_initialize"},
		{"memory above the cap", bigMemory.Bytes(), "over limit"},
	}
	h := newTestHost(t, Config{})
	for _, c := range cases {
		_, err := h.Load(context.Background(), Spec{Name: c.name, Kind: KindPolicy}, c.wasm)
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("%s: got %v, want a ValidationError", c.name, err)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: %q does not mention %q", c.name, err, c.want)
		}
	}
}

func TestRepeatedFailuresDisableWithBackoff(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	h := newTestHost(t, Config{Now: clock, FailureThreshold: 3, BackoffBase: time.Second, BackoffMax: 3 * time.Second})
	m, err := h.Load(context.Background(), Spec{Name: "trap", Kind: KindPolicy}, abiModule(1, wb.Func{Body: []byte{wb.OpUnreachable}}).Bytes())
	if err != nil {
		t.Fatal(err)
	}
	in := sampleBatching(4)
	call := func() Result { _, o := m.Batching(context.Background(), in); return o.Result }
	var got []Result
	for i := 0; i < 4; i++ {
		got = append(got, call())
	}
	advance(time.Second) // the 1 s backoff ends: one probe call traps and disables for 2 s
	got = append(got, call(), call())
	advance(time.Second)
	got = append(got, call())
	advance(time.Second)
	got = append(got, call()) // probe again: traps, backoff 4 s capped at 3 s
	advance(2 * time.Second)
	got = append(got, call())
	advance(time.Second)
	got = append(got, call())
	want := []Result{ResultTrap, ResultTrap, ResultTrap, ResultDisabled,
		ResultTrap, ResultDisabled, ResultDisabled, ResultTrap, ResultDisabled, ResultTrap}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("results\n got %v\nwant %v", got, want)
	}
	if h := m.Health(); !h.Disabled || h.Disables != 4 || h.Backoff != "3s" {
		t.Fatalf("health %+v", h)
	}
	if n := h.Metrics().Calls("trap", abi.HookBatching, ResultDisabled); n != 4 {
		t.Fatalf("disabled calls counted %d, want 4", n)
	}
}

// goHostile builds testdata/hostile once per test binary.
var (
	hostileOnce sync.Once
	hostileWasm []byte
	hostileErr  error
)

func buildHostile(t *testing.T) []byte {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go toolchain not found: cannot build the Go hostile guest")
	}
	hostileOnce.Do(func() {
		out := filepath.Join(testCacheDir(t), "hostile.wasm")
		cmd := exec.Command(goBin, "build", "-buildmode=c-shared", "-trimpath", "-o", out, "./testdata/hostile")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			hostileErr = errors.New(string(b))
			return
		}
		hostileWasm, hostileErr = os.ReadFile(out)
	})
	if hostileErr != nil {
		t.Fatal(hostileErr)
	}
	return hostileWasm
}

func TestGoHostileGuest(t *testing.T) {
	wasm := buildHostile(t)
	var logs strings.Builder
	var lmu sync.Mutex
	// A 16 MiB cap keeps the out-of-memory case short; the Go runtime's
	// dying traceback still takes a while under -race, hence 5 s.
	h := newTestHost(t, Config{PolicyTimeout: 5 * time.Second, PolicyMemoryPages: 256, FailureThreshold: 100,
		Logger: newCaptureLogger(&logs, &lmu)})
	m, err := h.Load(context.Background(), Spec{Tenant: "mallory", Name: "hostile", Kind: KindPolicy}, wasm)
	if err != nil {
		t.Fatal(err)
	}
	short := newTestHost(t, Config{PolicyTimeout: 100 * time.Millisecond})
	ms, err := short.Load(context.Background(), Spec{Name: "hostile", Kind: KindPolicy}, wasm)
	if err != nil {
		t.Fatal(err)
	}
	in := sampleBatching(8)
	ctx := context.Background()
	for _, c := range []struct {
		model string
		mod   *Module
		want  Result
	}{
		{"panic", m, ResultGuestError}, {"exit", m, ResultTrap}, {"oom", m, ResultOOM}, {"loop", ms, ResultTimeout},
		{"bad-index", m, ResultInvalid}, {"sleep", m, ResultOK}, {"ok", m, ResultOK},
	} {
		in.Model = c.model
		_, o := c.mod.Batching(ctx, in)
		if o.Result != c.want {
			t.Fatalf("%s: result %s (%v), want %s", c.model, o.Result, o.Err, c.want)
		}
	}
	// The guest's clock reads the input's now (plus virtual microseconds).
	in.Model = "clock"
	out, o := m.CallBatching(ctx, in)
	if !o.OK() || out.WaitUS > 10_000 {
		t.Fatalf("guest clock is %d µs off the input's now (%v)", out.WaitUS, o.Err)
	}
	// Randomness is deterministic: a fresh host's fresh instance draws the
	// same as this one's first draw.
	in.Model = "random"
	in.Jobs = sampleBatching(1000).Jobs
	m2, err := newTestHost(t, Config{}).Load(ctx, Spec{Name: "hostile", Kind: KindPolicy}, wasm)
	if err != nil {
		t.Fatal(err)
	}
	a, o1 := m2.CallBatching(ctx, in)
	m3, _ := newTestHost(t, Config{}).Load(ctx, Spec{Name: "hostile", Kind: KindPolicy}, wasm)
	b, o2 := m3.CallBatching(ctx, in)
	if !o1.OK() || !o2.OK() || !reflect.DeepEqual(a, b) {
		t.Fatalf("random draws differ: %v %v / %v %v", a, o1.Err, b, o2.Err)
	}
	// Logs are rate-limited (burst 20, and this host's clock stands still)
	// and counters kept.
	frozen := time.Unix(1_700_000_000, 0)
	hl := newTestHost(t, Config{Now: func() time.Time { return frozen }, Logger: newCaptureLogger(&logs, &lmu)})
	ml, err := hl.Load(ctx, Spec{Tenant: "mallory", Name: "chatty", Kind: KindPolicy}, wasm)
	if err != nil {
		t.Fatal(err)
	}
	lmu.Lock()
	logs.Reset()
	lmu.Unlock()
	in.Model = "log"
	if _, o := ml.CallBatching(ctx, in); !o.OK() {
		t.Fatal(o.Err)
	}
	lmu.Lock()
	lines := strings.Count(logs.String(), "decision log line")
	lmu.Unlock()
	if lines != 20 {
		t.Fatalf("%d guest log lines passed the limiter, want 20", lines)
	}
	if c := ml.Counters()["decisions"]; c != 1 {
		t.Fatalf("guest counter = %d", c)
	}
	var lprom strings.Builder
	if err := hl.Metrics().WritePrometheus(&lprom); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`kiln_wasm_log_lines_dropped_total{module="mallory/chatty"} 81`,
		`kiln_wasm_guest_counter{module="mallory/chatty",name="decisions"} 1`,
	} {
		if !strings.Contains(lprom.String(), want) {
			t.Fatalf("metrics lack %q:\n%s", want, lprom.String())
		}
	}
	var prom strings.Builder
	if err := h.Metrics().WritePrometheus(&prom); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`kiln_wasm_calls_total{module="mallory/hostile",hook="batching",result="oom"} 1`,
		`kiln_wasm_calls_total{module="mallory/hostile",hook="batching",result="guest_error"} 1`,
		`kiln_wasm_call_duration_seconds_count{module="mallory/hostile",hook="batching"}`,
	} {
		if !strings.Contains(prom.String(), want) {
			t.Fatalf("metrics lack %q:\n%s", want, prom.String())
		}
	}
}
