package worker

import (
	"context"
	"errors"
	"image"
	"sync"
	"testing"
	"time"

	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/jobs"
)

// stepEngine's model is a StepModel whose running batch advances every
// item one step per Step, paced by gate tokens. It records the prompts of
// each step, fails the item prompted "fail" at its second step, and
// reports free memory and an activation peak of perImage bytes per image.
type stepEngine struct {
	gate     chan struct{}
	free     int64
	perImage int64

	mu    sync.Mutex
	steps [][]string
}

func (e *stepEngine) Device() string { return "test" }
func (e *stepEngine) Load(ctx context.Context, m catalog.Model) (Model, error) {
	return &stepModel{e: e}, nil
}

type stepModel struct{ e *stepEngine }

func (m *stepModel) Close() error { return nil }
func (m *stepModel) Generate(ctx context.Context, req Request, onProgress func(Progress)) (*Result, error) {
	return nil, errors.New("stepModel: Generate is not used for step models")
}
func (m *stepModel) StartBatch(ctx context.Context) RunningBatch {
	return &stepBatch{e: m.e, ctx: ctx}
}

type stepItem struct {
	id, done int
	it       BatchItem
	cb       func(Progress)
}

type stepBatch struct {
	e     *stepEngine
	ctx   context.Context
	items []*stepItem
	next  int
	last  int
}

func (b *stepBatch) Add(it BatchItem, cb func(Progress)) (int, error) {
	b.next++
	b.items = append(b.items, &stepItem{id: b.next, it: it, cb: cb})
	return b.next, nil
}

func (b *stepBatch) Step() []StepDone {
	<-b.e.gate
	var out []StepDone
	var prompts []string
	keep := b.items[:0]
	b.last = 0
	for _, s := range b.items {
		req := s.it.Request
		if err := s.it.Ctx.Err(); err != nil {
			out = append(out, StepDone{ID: s.id, BatchResult: BatchResult{Err: err}})
			continue
		}
		prompts = append(prompts, req.Prompt)
		b.last += req.N
		s.done++
		if req.Prompt == "fail" && s.done == 2 {
			out = append(out, StepDone{ID: s.id, BatchResult: BatchResult{Err: errors.New("device fault")}})
			continue
		}
		s.cb(Progress{Step: s.done, Steps: req.Steps})
		if s.done < req.Steps {
			keep = append(keep, s)
			continue
		}
		res := &Result{}
		for i := 0; i < req.N; i++ {
			res.Images = append(res.Images, image.NewRGBA(image.Rect(0, 0, req.Width, req.Height)))
			res.Seeds = append(res.Seeds, req.Seed+uint64(i))
		}
		out = append(out, StepDone{ID: s.id, BatchResult: BatchResult{Result: res}})
	}
	b.items = keep
	b.e.mu.Lock()
	b.e.steps = append(b.e.steps, prompts)
	b.e.mu.Unlock()
	return out
}

func (b *stepBatch) Len() int { return len(b.items) }
func (b *stepBatch) Images() int {
	n := 0
	for _, s := range b.items {
		n += s.it.Request.N
	}
	return n
}
func (b *stepBatch) Items() []RunningItem {
	var out []RunningItem
	for _, s := range b.items {
		out = append(out, RunningItem{ID: s.id, Images: s.it.Request.N, Remaining: s.it.Request.Steps - s.done})
	}
	return out
}
func (b *stepBatch) Memory() (int64, int64) { return b.e.free, int64(b.last) * b.e.perImage }

// pace feeds the engine's gate until the test ends.
func (e *stepEngine) pace(t *testing.T) {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-done:
				return
			case e.gate <- struct{}{}:
				time.Sleep(3 * time.Millisecond)
			}
		}
	}()
}

func (e *env) submitSteps(t *testing.T, prompt string, steps int) *jobs.Job {
	t.Helper()
	j := &jobs.Job{ID: jobs.NewID(), Tenant: "acme", Status: jobs.StatusQueued, CreatedAt: time.Now().UTC(),
		Params: jobs.Params{Model: "toy", Prompt: prompt, Width: 16, Height: 8, Steps: steps,
			Guidance: 7, Sampler: "euler", Seed: 40, N: 1, Priority: jobs.PriorityNormal}}
	if err := e.store.Submit(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	_ = e.b.Conn.Publish(events.KickSubject, []byte(jobs.PriorityNormal))
	return j
}

// TestJobsJoinARunningBatch: jobs arriving while a batch runs join it at a
// step boundary and leave when their own steps are done; a job failing
// alone and a job canceled mid-batch do not disturb their neighbours.
func TestJobsJoinARunningBatch(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	eng := &stepEngine{gate: make(chan struct{})}
	w := e.worker(t, eng, "w1", time.Second, func(o *Options) { o.Window = 8 })
	first := e.submitSteps(t, "first", 60)
	run(t, w)
	e.waitStatus(t, first, jobs.StatusRunning)
	eng.pace(t)
	late := e.submitSteps(t, "late", 4)
	bad := e.submitSteps(t, "fail", 4)
	gone := e.submitSteps(t, "canceled", 1000)
	e.waitStatus(t, gone, jobs.StatusRunning)
	if _, err := e.store.Update(context.Background(), gone.Tenant, gone.ID, func(r *jobs.Job) error {
		r.CancelRequested = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Conn.Publish(events.CancelSubject(gone.Tenant, gone.ID), nil); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(t, late, jobs.StatusSucceeded)
	e.waitStatus(t, bad, jobs.StatusFailed)
	e.waitStatus(t, gone, jobs.StatusCanceled)
	e.waitStatus(t, first, jobs.StatusSucceeded)

	eng.mu.Lock()
	defer eng.mu.Unlock()
	count := map[string]int{}
	together := false
	for _, s := range eng.steps {
		for _, p := range s {
			count[p]++
		}
		if len(s) > 1 && s[0] == "first" {
			together = true
		}
	}
	if !together || count["first"] != 60 || count["late"] != 4 || count["fail"] != 2 {
		t.Fatalf("steps per job %v (joined the first job's batch: %v)", count, together)
	}
	if w.o.Metrics.Joins.Value() < 3 {
		t.Fatalf("%v joins counted, want 3", w.o.Metrics.Joins.Value())
	}
}

// TestAdmissionIsMemoryAware: with the measured activation peak at 300
// bytes per image and 1000 bytes free, at most three images run together
// (90% of free memory), however many jobs wait and whatever the cap.
func TestAdmissionIsMemoryAware(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	eng := &stepEngine{gate: make(chan struct{}), free: 1000, perImage: 300}
	w := e.worker(t, eng, "w1", time.Second, func(o *Options) { o.Window, o.MaxBatch = 8, 8 })
	first := e.submitSteps(t, "first", 30)
	run(t, w)
	e.waitStatus(t, first, jobs.StatusRunning)
	var rest []*jobs.Job
	for _, p := range []string{"b", "c", "d", "e", "f"} {
		rest = append(rest, e.submitSteps(t, p, 5))
	}
	eng.pace(t)
	for _, j := range append(rest, first) {
		e.waitStatus(t, j, jobs.StatusSucceeded)
	}
	eng.mu.Lock()
	defer eng.mu.Unlock()
	most := 0
	for _, s := range eng.steps {
		most = max(most, len(s))
	}
	if most != 3 {
		t.Fatalf("largest step ran %d images; want 3 (the memory allows 3, 6 jobs waited)", most)
	}
}
