package worker

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-project/kiln/server/jobs"
)

// onlyWorker is a placement that leaves every job for one worker.
type onlyWorker struct {
	worker   string
	declined atomic.Int32
	demand   atomic.Int32
}

func (p *onlyWorker) Take(worker, model string, created time.Time) bool {
	if worker != p.worker {
		p.declined.Add(1)
		return false
	}
	return true
}

func (p *onlyWorker) Demand(worker, model string, local int) int {
	p.demand.Add(1)
	return local
}

func TestPlacementLeavesJobsForTheChosenWorker(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	pl := &onlyWorker{worker: "w2"}
	with := func(o *Options) { o.Placement = pl }
	// w1 starts first, so it sees the jobs first and must hand them back.
	run(t, e.worker(t, &testEngine{}, "w1", time.Second, with))
	js := []*jobs.Job{e.submit(t, "one", 1), e.submit(t, "two", 1)}
	time.Sleep(300 * time.Millisecond)
	run(t, e.worker(t, &testEngine{}, "w2", time.Second, with))
	for _, j := range js {
		if r := e.waitStatus(t, j, jobs.StatusSucceeded); r.Worker != "w2" {
			t.Fatalf("job %s ran on %s, want w2", j.ID, r.Worker)
		}
	}
	if pl.declined.Load() == 0 {
		t.Fatal("w1 never asked the placement")
	}
}

func TestHeartbeatCarriesQueuedByModel(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	w := e.worker(t, &testEngine{}, "w1", time.Second)
	if hb := w.heartbeat(false); hb.Queued != nil {
		t.Fatalf("idle worker queued = %v", hb.Queued)
	}
	q := &window{}
	for _, m := range []string{"a", "a", "b"} {
		q.pending = append(q.pending, pendingMsg{Pending: Pending{Job: &jobs.Job{Params: jobs.Params{Model: m}}}})
	}
	w.win.Store(q)
	w.running = []*active{{job: &jobs.Job{Params: jobs.Params{Model: "b"}}}}
	hb := w.heartbeat(false)
	w.running = nil
	if hb.Queued["a"] != 2 || hb.Queued["b"] != 2 || len(hb.Queued) != 2 {
		t.Fatalf("queued = %v, want a:2 b:2", hb.Queued)
	}
}
