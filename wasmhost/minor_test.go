package wasmhost

import (
	"context"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/internal/guestbuild"
	"github.com/kiln-project/kiln/policies/builtin"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

func lockedQualityInput() *abi.QualityInput {
	return &abi.QualityInput{NowUS: 1, Tenant: "acme", P95US: 30_000_000, TargetP95US: 4_000_000, Level: 0.6,
		Request: abi.QualityParams{Steps: 30, Width: 512, Height: 512, Sampler: "euler", Profile: "balanced"},
		Limits:  abi.QualityLimits{MinSteps: 1, MaxSteps: 50, MinWidth: 64, MaxWidth: 1024, MinHeight: 64, MaxHeight: 1024, SizeMultiple: 8},
		Locked:  abi.LockWidth | abi.LockHeight, Model: "sd15"}
}

// TestQualityMinor2Builtin: the built-in module speaks minor 2: it keeps
// locked parameters and gives its reason, exactly as the native code.
func TestQualityMinor2Builtin(t *testing.T) {
	m := loadBuiltinPolicies(t, newTestHost(t, Config{}))
	if m.Info().ABIMinor != abi.Minor {
		t.Fatalf("built-in reports minor %d, want %d", m.Info().ABIMinor, abi.Minor)
	}
	in := lockedQualityInput()
	got, o := m.CallQuality(context.Background(), in)
	if !o.OK() {
		t.Fatal(o.Result, o.Err)
	}
	if want := builtin.Quality(in); got != want {
		t.Fatalf("wasm %+v, native %+v", got, want)
	}
	if got.Params.Width != 512 || got.Params.Steps >= 30 || !strings.Contains(got.Reason, "target") {
		t.Fatalf("answer %+v", got)
	}
}

// TestQualityMinor0ModuleKeepsWorking: a module without kiln_abi_minor
// gets minor-0 input (it fails on anything else), its answer is used, and
// the host restores the parameters the request locked.
func TestQualityMinor0ModuleKeepsWorking(t *testing.T) {
	h := newTestHost(t, Config{})
	wasm := guestbuild.New(t.TempDir()).Build(t, "./testdata/minor0")
	m, err := h.Load(context.Background(), Spec{Name: "minor0", Kind: KindPolicy}, wasm)
	if err != nil {
		t.Fatal(err)
	}
	if m.Info().ABIMinor != 0 {
		t.Fatalf("minor %d", m.Info().ABIMinor)
	}
	in := lockedQualityInput()
	got, o := m.CallQuality(context.Background(), in)
	if !o.OK() {
		t.Fatal(o.Result, o.Err)
	}
	if got.Params.Steps != 15 || got.Params.Width != 512 || got.Level != 0.5 || got.Reason != "" {
		t.Fatalf("answer %+v (width must stay locked at 512, steps halve)", got)
	}
	in.Locked = 0
	if got, o := m.CallQuality(context.Background(), in); !o.OK() || got.Params.Width != 1024 {
		t.Fatalf("unlocked: %+v %v", got, o.Err)
	}
}
