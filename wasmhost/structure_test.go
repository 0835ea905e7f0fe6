package wasmhost

import (
	"context"
	"errors"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	wb "github.com/kiln-project/kiln/internal/wasmbuild"
	nodeswasm "github.com/kiln-project/kiln/nodes-wasm"
	"github.com/kiln-project/kiln/policies"
)

// brTableBomb is a policy whose hook holds one br_table of n targets.
func brTableBomb(n int) []byte {
	body := []byte{0x02, wb.BlockEmpty}
	body = append(body, wb.I32Const(0)...)
	body = append(body, 0x0e)
	body = wb.Uleb(body, uint64(n))
	body = append(body, make([]byte, n+1)...) // every target and the default: label 0
	body = append(body, wb.OpEnd)
	body = append(body, wb.I64Const(0)...)
	return abiModule(1, wb.Func{Body: body}).Bytes()
}

// nestBomb is a policy whose hook nests n empty blocks.
func nestBomb(n int) []byte {
	body := make([]byte, 0, 3*n+16)
	for i := 0; i < n; i++ {
		body = append(body, 0x02, wb.BlockEmpty)
	}
	for i := 0; i < n; i++ {
		body = append(body, wb.OpEnd)
	}
	body = append(body, wb.I64Const(0)...)
	return abiModule(1, wb.Func{Body: body}).Bytes()
}

// TestCompileBombsAreRefusedBeforeCompiling: modules built to be expensive
// to compile — a br_table with 2M targets, 1M nested blocks — are refused
// by the structural scan, without compiling and without the memory a
// compilation takes (issue 24, compile bombs); the built-in guests and
// modest modules pass.
func TestCompileBombsAreRefusedBeforeCompiling(t *testing.T) {
	h := newTestHost(t, Config{})
	for name, wasm := range map[string][]byte{"br_table 2M": brTableBomb(2_000_000), "nested 1M": nestBomb(1_000_000)} {
		var before, after goruntime.MemStats
		goruntime.GC()
		goruntime.ReadMemStats(&before)
		_, err := h.Load(context.Background(), Spec{Name: "bomb", Tenant: "acme", Kind: KindPolicy}, wasm)
		goruntime.ReadMemStats(&after)
		var ve *ValidationError
		if !errors.As(err, &ve) || !strings.Contains(ve.Error(), "structure over the limits") {
			t.Fatalf("%s (%d bytes): %v", name, len(wasm), err)
		}
		if d := after.TotalAlloc - before.TotalAlloc; d > 8<<20 {
			t.Errorf("%s: refusing it allocated %d bytes", name, d)
		}
	}
	for name, wasm := range map[string][]byte{"br_table 100": brTableBomb(100), "nested 100": nestBomb(100)} {
		if _, err := h.Load(context.Background(), Spec{Name: "ok", Tenant: "acme", Kind: KindPolicy}, wasm); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for name, wasm := range map[string][]byte{"policies": policies.Builtin(), "nodes": nodeswasm.Builtin()} {
		if st, err := CheckStructure(wasm, StructureLimits{}); err != nil {
			t.Fatalf("built-in %s: %v (%+v)", name, err, st)
		}
	}
}

// TestCompileIsCanceledWithItsCaller: a caller whose context ends (an
// uploader that disconnects) gets its answer at once, and a compilation
// that cannot start within the compile timeout is refused.
func TestCompileIsCanceledWithItsCaller(t *testing.T) {
	gate := NewCompileGate(1)
	h := newTestHost(t, Config{Gate: gate, CompileTimeout: 100 * time.Millisecond})
	gate.slots <- struct{}{} // every compiler busy
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	_, err := h.Load(ctx, Spec{Name: "m", Tenant: "acme", Kind: KindPolicy}, brTableBomb(10))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled caller: %v", err)
	}
	_, err = h.Load(context.Background(), Spec{Name: "m", Tenant: "acme", Kind: KindPolicy}, brTableBomb(10))
	var ve *ValidationError
	if errors.As(err, &ve) || err == nil || !strings.Contains(err.Error(), "no compiler free") {
		t.Fatalf("compile timeout: %v", err)
	}
	<-gate.slots
	if _, err := h.Load(context.Background(), Spec{Name: "m", Tenant: "acme", Kind: KindPolicy}, brTableBomb(10)); err != nil {
		t.Fatalf("after the gate frees: %v", err)
	}
}

func TestCheckStructureLimits(t *testing.T) {
	for _, c := range []struct {
		wasm []byte
		lim  StructureLimits
		want string
	}{
		{brTableBomb(50), StructureLimits{MaxBrTableTargets: 10}, "br_table with 50 targets"},
		{nestBomb(50), StructureLimits{MaxNesting: 10}, "nested more than 10"},
		{nestBomb(50), StructureLimits{MaxBytes: 50}, "the limit is 50"},
		{nestBomb(50), StructureLimits{MaxFunctions: 2}, "functions"},
		{nestBomb(50), StructureLimits{MaxInstructions: 20}, "instructions"},
	} {
		if _, err := CheckStructure(c.wasm, c.lim); !errors.Is(err, ErrStructure) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.lim, err, c.want)
		}
	}
	for _, bad := range [][]byte{nil, []byte("\x00asm"), []byte("\x00asm\x01\x00\x00\x00\x0a\xff"), append([]byte("\x00asm\x01\x00\x00\x00\x0a\x05\x01\x03\x00\x02"), 0x40)} {
		if _, err := CheckStructure(bad, StructureLimits{}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzCheckStructure: any input is scanned without a panic, and a module
// the scan accepts is within its limits.
func FuzzCheckStructure(f *testing.F) {
	f.Add(brTableBomb(3))
	f.Add(nestBomb(3))
	f.Add(abiModule(1, wb.Func{Body: wb.I64Const(0)}).Bytes())
	lim := StructureLimits{MaxBrTableTargets: 64, MaxNesting: 16, MaxFunctions: 16}
	f.Fuzz(func(t *testing.T, wasm []byte) {
		st, err := CheckStructure(wasm, lim)
		if err == nil && (st.MaxBrTableTargets > 64 || st.MaxNesting > 16 || st.Functions > 16) {
			t.Fatalf("accepted %+v", st)
		}
	})
}
