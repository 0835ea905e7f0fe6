package worker

import (
	"fmt"
	"sort"
	"time"

	"github.com/kiln-project/kiln/server/jobs"
)

// Pending is a job a worker holds in its local window, not yet started.
type Pending struct {
	Job     *jobs.Job
	Arrived time.Time
}

// Decision is a scheduler's answer: run these pending jobs (indices into
// the pending list) now as one batch, or wait up to Wait for more to arrive.
type Decision struct {
	Run  []int
	Wait time.Duration
}

// Stats is what the worker has measured, for the scheduler's decisions.
type Stats struct {
	// StepLatency is the smoothed wall time of one sampler step per batch
	// size (images), measured for the model and image size of the head
	// pending job (the highest priority, oldest); sorted by batch size,
	// empty before the worker has run such a job.
	StepLatency []StepLatency
	// FreeMemBytes is the device memory free at the last step boundary
	// and ImageMemBytes the measured activation bytes of one image at the
	// head job's model and size (0: unknown).
	FreeMemBytes, ImageMemBytes int64
}

// StepLatency is the measured duration of one step at one batch size.
type StepLatency struct {
	Images  int
	Latency time.Duration
}

// Scheduler decides which of the worker's pending jobs run next, as one
// batch. It is the hook for batching policies: the built-in FCFS runs one
// job at a time, highest priority first, oldest first.
type Scheduler interface {
	Decide(now time.Time, pending []Pending, stats Stats) (Decision, error)
}

// FCFS is the built-in scheduler.
type FCFS struct{}

func priorityRank(p string) int {
	switch p {
	case jobs.PriorityHigh:
		return 0
	case jobs.PriorityLow:
		return 2
	}
	return 1
}

// Decide implements Scheduler.
func (FCFS) Decide(_ time.Time, pending []Pending, _ Stats) (Decision, error) {
	if len(pending) == 0 {
		return Decision{}, nil
	}
	return Decision{Run: []int{head(pending)}}, nil
}

// head is the index of the pending job FCFS runs first: highest
// priority, then oldest, then first held.
func head(pending []Pending) int {
	idx := make([]int, len(pending))
	for i := range idx {
		idx[i] = i
	}
	sortFCFS(pending, idx)
	return idx[0]
}

// sortFCFS orders indices into pending as FCFS serves them: highest
// priority, then oldest, then first held.
func sortFCFS(pending []Pending, idx []int) {
	sort.SliceStable(idx, func(a, b int) bool {
		pa, pb := pending[idx[a]], pending[idx[b]]
		ra, rb := priorityRank(pa.Job.Params.Priority), priorityRank(pb.Job.Params.Priority)
		if ra != rb {
			return ra < rb
		}
		return pa.Job.CreatedAt.Before(pb.Job.CreatedAt)
	})
}

// checkDecision validates a scheduler's answer: indices in range and
// unique, and at most maxWait of waiting.
func checkDecision(d Decision, n int, maxWait time.Duration) error {
	seen := map[int]bool{}
	for _, i := range d.Run {
		if i < 0 || i >= n {
			return fmt.Errorf("worker: scheduler chose index %d of %d", i, n)
		}
		if seen[i] {
			return fmt.Errorf("worker: scheduler chose index %d twice", i)
		}
		seen[i] = true
	}
	if len(d.Run) == 0 && (d.Wait <= 0 || d.Wait > maxWait) {
		return fmt.Errorf("worker: scheduler chose nothing and a wait of %v", d.Wait)
	}
	return nil
}
