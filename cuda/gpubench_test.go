package cuda_test

import (
	"bytes"
	"context"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/bench"
	"github.com/kiln-project/kiln/cuda"
)

// TestDoctorReport prints what `kiln doctor` prints (on any machine).
func TestDoctorReport(t *testing.T) {
	var b bytes.Buffer
	cuda.Probe().Print(&b)
	if !strings.Contains(b.String(), "verdict") {
		t.Fatalf("report without a verdict:\n%s", b.String())
	}
	t.Log("\n" + b.String())
}

// TestGPUBench runs the `kiln bench` suite from the test binary, for GPU
// machines that get test binaries rather than a kiln build (see
// scripts/gpu-check.sh). It runs only with KILN_BENCH=1; KILN_BENCH_MODELS,
// KILN_BENCH_BATCHES, KILN_BENCH_STEPS, KILN_BENCH_ITERS, KILN_BENCH_GUIDANCE, KILN_BENCH_PROFILE
// and KILN_BENCH_OUT (JSON) configure it.
func TestGPUBench(t *testing.T) {
	if os.Getenv("KILN_BENCH") != "1" {
		t.Skip("set KILN_BENCH=1 to run the benchmark suite")
	}
	o := bench.DefaultOptions()
	o.Models = []string{"synthetic:sd15"}
	if v := os.Getenv("KILN_BENCH_MODELS"); v != "" {
		o.Models = strings.Split(v, ",")
	}
	if v := os.Getenv("KILN_BENCH_BATCHES"); v != "" {
		o.Batches = nil
		for _, s := range strings.Split(v, ",") {
			n, err := strconv.Atoi(s)
			if err != nil {
				t.Fatal(err)
			}
			o.Batches = append(o.Batches, n)
		}
	}
	if n, err := strconv.Atoi(os.Getenv("KILN_BENCH_STEPS")); err == nil {
		o.Steps = n
	}
	if n, err := strconv.Atoi(os.Getenv("KILN_BENCH_ITERS")); err == nil {
		o.Iterations = n
	}
	if g, err := strconv.ParseFloat(os.Getenv("KILN_BENCH_GUIDANCE"), 64); err == nil {
		o.Guidance = g
	}
	o.Profile = os.Getenv("KILN_BENCH_PROFILE") == "1"
	sel, err := cuda.Select(os.Getenv("KILN_BENCH_DEVICE"))
	if err != nil {
		t.Fatal(err)
	}
	defer sel.Close()
	if p := os.Getenv("KILN_BENCH_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			defer f.Close() // deferred first: runs after StopCPUProfile has written
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	rep, err := bench.Run(context.Background(), sel, o, nil)
	if rep != nil {
		rep.WriteTable(os.Stdout)
		if p := os.Getenv("KILN_BENCH_OUT"); p != "" {
			f, ferr := os.Create(p)
			if ferr == nil {
				_ = rep.WriteJSON(f)
				f.Close()
			}
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}
