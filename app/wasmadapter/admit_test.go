package wasmadapter

import (
	"testing"
	"time"

	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/wasmhost"
	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/kiln-project/kiln/worker"
)

// TestAdmitAsksTheBatchingPolicy: at a step boundary the built-in batching
// module (ABI minor 1) sees the running batch and admits joinable jobs of
// any compatibility key while the running and joining images fit; jobs of
// another size are never offered.
func TestAdmitAsksTheBatchingPolicy(t *testing.T) {
	w := start(t)
	if m := w.Registry.BuiltinPolicies(); m == nil || m.Info().ABIMinor != abi.Minor {
		t.Fatalf("the built-in policy module speaks another minor, want %d", abi.Minor)
	}
	s := w.Scheduler(SchedulerOptions{MaxBatch: 16})
	other := job("c", "t2", jobs.PriorityNormal, 3*time.Second, 768) // another size
	steps := job("d", "t1", jobs.PriorityNormal, time.Second, 512)
	steps.Params.Steps, steps.Params.Sampler = 30, "dpmpp_2m" // another compatibility key
	p := pending(job("a", "t1", jobs.PriorityNormal, 2*time.Second, 512), other, steps, job("e", "t1", jobs.PriorityLow, 4*time.Second, 512))
	run := worker.RunningState{Model: "m", Width: 512, Height: 512, Images: 2, MaxImages: 4,
		Items: []worker.RunningItem{{ID: 1, Images: 2, Remaining: 7, Job: "r", Tenant: "t1"}}}
	idx, err := s.Admit(time.Now(), run, p, worker.Stats{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range idx {
		got = append(got, p[i].Job.ID)
	}
	if len(got) != 2 || got[0] != "a" || got[1] != "d" {
		t.Fatalf("admitted %v; want a then d (normal priority, oldest first; 2+2 images fill 4)", got)
	}
	if n := w.Host.Metrics().Calls("builtin", abi.HookBatching, wasmhost.ResultOK); n != 1 {
		t.Fatalf("batching calls %d, want the module asked once", n)
	}
	run.FreeMemBytes, run.ImageMemBytes = 2500, 1000 // the 2 running images + 1 would need 3000
	if idx, _ := s.Admit(time.Now(), run, p, worker.Stats{}); len(idx) != 0 {
		t.Fatalf("admitted %v past the free memory", idx)
	}
}
