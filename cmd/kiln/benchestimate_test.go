package main

import (
	"testing"

	"github.com/kiln-project/kiln/bench"
	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/models"
)

func TestBenchEstimate(t *testing.T) {
	if f, ok := stepFLOP("synthetic:sd15", 0); !ok || f != sd15StepFLOP {
		t.Fatalf("sd15: %g %v", f, ok)
	}
	if f, _ := stepFLOP("synthetic:sd15@1024", 0); f != 4*sd15StepFLOP {
		t.Fatalf("sd15@1024: %g", f)
	}
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	builtin, err := models.BuiltinPath()
	if err != nil {
		t.Fatal(err)
	}
	params, side, ok := unetParams(builtin)
	if !ok || params < 1e6 || params > 100e6 || side != 128 {
		t.Fatalf("built-in UNet: %g parameters, side %d, %v", params, side, ok)
	}
	be := cpu.New()
	o := bench.DefaultOptions()
	o.Models = []string{"synthetic:sd15"}
	long, flops, ok := estimateBench(be, o)
	if !ok || flops <= 0 || long < longBench {
		t.Fatalf("default CPU bench estimated at %v (%g FLOP/s, %v); it takes hours", long, flops, ok)
	}
	o.Models, o.Batches, o.Steps = []string{builtin}, []int{1}, 4
	short, _, ok := estimateBench(be, o)
	if !ok || short >= longBench || short <= 0 || short > long/100 {
		t.Fatalf("built-in bench estimated at %v", short)
	}
	if _, _, ok := estimateBench(be, bench.Options{Models: []string{t.TempDir()}, Batches: []int{1}, Steps: 1, Iterations: 1}); ok {
		t.Fatal("a folder without a UNet was estimated")
	}
}
