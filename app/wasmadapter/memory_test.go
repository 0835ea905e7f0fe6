package wasmadapter

import (
	"testing"
	"time"

	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/worker"
)

// The memory manager fills the batching input: free bytes and each job's
// activation estimate; the built-in policy then batches only what fits.
func TestSchedulerPassesMemoryToThePolicy(t *testing.T) {
	w := start(t)
	mgr, err := memory.New(memory.Config{Name: "cuda:0", Budget: 3 << 30})
	if err != nil {
		t.Fatal(err)
	}
	// 512×512 images measured at 1 GiB each.
	mgr.RecordPeak(memory.Batch{Model: "m", Images: 1, Width: 512, Height: 512}, 1<<30)
	s := w.Scheduler(SchedulerOptions{MaxBatch: 8, Memory: mgr})
	p := pending(job("a", "t1", jobs.PriorityNormal, 3*time.Second, 512), job("b", "t1", jobs.PriorityNormal, 2*time.Second, 512),
		job("c", "t1", jobs.PriorityNormal, time.Second, 512), job("d", "t1", jobs.PriorityNormal, 0, 512))
	in := s.Input(time.Now(), p, worker.Stats{})
	if in.FreeMemBytes != 3<<30 || in.Jobs[0].MemBytes != 1<<30 {
		t.Fatalf("free %d, job bytes %d", in.FreeMemBytes, in.Jobs[0].MemBytes)
	}
	linear := worker.Stats{StepLatency: []worker.StepLatency{{Images: 1, Latency: time.Millisecond}, {Images: 2, Latency: 2 * time.Millisecond}}}
	d, err := s.Decide(time.Now(), p, linear)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Run) != 3 {
		t.Fatalf("batched %d jobs of 1 GiB into 3 GiB free", len(d.Run))
	}
	// Resident weights leave less room.
	mgr.Place("m", memory.GPU, []memory.Component{{Kind: "unet", Bytes: 2 << 30}})
	if d, _ = s.Decide(time.Now(), p, linear); len(d.Run) != 1 {
		t.Fatalf("batched %d jobs with 1 GiB free", len(d.Run))
	}
}
