package bench

import (
	"bytes"
	"context"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/cuda"
)

// TestSyntheticQwenImage: synthetic:qwen-image (random weights at a small
// width) is timed end to end on the CPU; component timings are refused.
func TestSyntheticQwenImage(t *testing.T) {
	o := DefaultOptions()
	o.Models = []string{SyntheticPrefix + "qwen-image"}
	o.Batches, o.Size = []int{1}, 64
	o.Steps, o.Iterations, o.Warmup = 2, 1, 0
	o.Components, o.Profile = false, false
	sel := &cuda.Selection{Backend: cpu.New(), Reason: "test"}
	rep, err := Run(context.Background(), sel, o, NewProgress(&bytes.Buffer{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 1 || rep.Results[0].EndToEnd.N != 1 || rep.Results[0].EndToEnd.P50 <= 0 || rep.Results[0].StepInterval.N != 1 {
		t.Fatalf("results %+v", rep.Results)
	}
	o.Components = true
	if _, err := Run(context.Background(), sel, o, NewProgress(&bytes.Buffer{})); err == nil {
		t.Fatal("component timings of synthetic:qwen-image were accepted")
	}
}
