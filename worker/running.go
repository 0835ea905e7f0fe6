package worker

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/kiln-project/kiln/server/jobs"
)

// window is the worker's local window of queued jobs it holds but has not
// started.
type window struct {
	mu      sync.Mutex
	pending []pendingMsg
	// kick delivers the gateways' "a job was enqueued" notices.
	kick <-chan string
}

func (q *window) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// demand counts the window's jobs for model: the queue demand eviction
// policies weigh.
func (q *window) demand(model string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, p := range q.pending {
		if p.Job != nil && p.Job.Params.Model == model {
			n++
		}
	}
	return n
}

// RunningState is a running batch as an Admitter sees it at a step
// boundary.
type RunningState struct {
	// Model, Width and Height are the batch's (jobs joining must match).
	Model         string
	Width, Height int
	// Items are the jobs in the batch with their remaining steps.
	Items []RunningItem
	// Images counts the images in the batch; MaxImages is what it may
	// hold: the configured cap, lowered by the measured memory.
	Images, MaxImages int
	// FreeMemBytes is the device memory free at this boundary and
	// ImageMemBytes the measured activation bytes one image takes at this
	// shape (0: unknown).
	FreeMemBytes, ImageMemBytes int64
}

// Admitter is a Scheduler that also decides, at every step boundary of a
// running batch, which pending jobs join it. Schedulers that do not
// implement it get the default: compatible jobs (same model and size) in
// priority then arrival order, while they fit in MaxImages.
type Admitter interface {
	// Admit returns indices into pending of the jobs that join now.
	Admit(now time.Time, run RunningState, pending []Pending, stats Stats) ([]int, error)
}

// memoryTable keeps the largest activation bytes per image measured for
// each (model, width, height): the basis of memory-aware admission.
type memoryTable struct {
	mu       sync.Mutex
	perImage map[string]int64
}

func (t *memoryTable) observe(shape string, images int, peak int64) {
	if images < 1 || peak <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.perImage == nil {
		t.perImage = map[string]int64{}
	}
	if len(t.perImage) >= maxLatencyShapes {
		clear(t.perImage) // bounded; it is measured again at the next steps
	}
	t.perImage[shape] = max(t.perImage[shape], (peak+int64(images)-1)/int64(images))
}

func (t *memoryTable) get(shape string) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.perImage[shape]
}

// memoryHeadroom is the fraction of free device memory a batch may plan
// to fill with activations.
const memoryHeadroom = 0.9

// maxImages is the number of images a running batch of shape may hold:
// the configured cap, lowered to what the free memory allows at the
// measured activation bytes per image (never below the images already
// running).
func (w *Worker) maxImages(shape string, images int, free int64) (int, int64) {
	limit := w.o.MaxBatch
	per := w.memory.get(shape)
	if free > 0 && per > 0 {
		byMem := int(float64(free) * memoryHeadroom / float64(per))
		limit = min(limit, max(byMem, images))
	}
	return limit, per
}

// runSteps runs a group of jobs of one model as a running batch: at every
// step boundary finished jobs leave (to post-processing and storing in the
// background) and the pending jobs the batching policy admits join, while
// the window is refilled from the queue during each step. It returns when
// the batch is empty.
func (w *Worker) runSteps(ctx context.Context, sm StepModel, g []*active, q *window) {
	bctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rb := sm.StartBatch(bctx)
	head := g[0].job.Params
	shape := shapeKey(&head)
	rec := &stepRecorder{w: w}
	type member struct {
		a    *active
		stop func()
	}
	members := map[int]*member{}
	defer func() {
		if r := recover(); r != nil {
			err := fmt.Errorf("worker: engine panic: %v", r)
			w.log.Error("engine panic", "jobs", len(members), "panic", r, "stack", string(debug.Stack()))
			for _, m := range members {
				m.stop()
				w.end(ctx, m.a, nil, err)
			}
		}
	}()
	join := func(a *active) {
		start := time.Now()
		req, err := w.request(a)
		if err == nil {
			var id int
			if id, err = rb.Add(BatchItem{Ctx: a.ctx, Request: req}, w.reporter(a.job, req.N, rec)); err == nil {
				members[id] = &member{a: a, stop: w.watchCancel(ctx, a)}
			}
		}
		w.o.Metrics.Stage.With(StagePrepare).Observe(time.Since(start).Seconds())
		if err != nil {
			w.end(ctx, a, nil, err)
		}
	}
	for _, a := range g {
		join(a)
	}
	for rb.Len() > 0 {
		filled := make(chan struct{})
		stepDone := make(chan struct{})
		if ctx.Err() == nil {
			go func() {
				defer close(filled)
				w.fillDuring(ctx, q, stepDone)
			}()
		} else {
			close(filled)
		}
		images := rb.Images()
		w.o.Metrics.BatchImages.Observe(float64(images))
		start := time.Now()
		done := rb.Step()
		took := time.Since(start)
		close(stepDone)
		<-filled
		var decode time.Duration
		for _, d := range done {
			decode = max(decode, d.Decode)
			m := members[d.ID]
			if m == nil {
				continue
			}
			delete(members, d.ID)
			m.stop()
			r := d.BatchResult
			if r.Err == nil && r.Result == nil {
				r.Err = fmt.Errorf("engine returned no result")
			}
			if mr, ok := rb.(MemoryReporter); ok {
				if rep := mr.MemoryReport(); rep.Recovered() {
					// Reported in the job record when it settles.
					m.a.job.Memory = &jobs.MemoryRecovery{Splits: rep.Splits, Chunk: rep.Chunk, FreedOthers: rep.FreedOthers, Sequential: rep.Sequential}
				}
			}
			w.finish(ctx, m.a, r)
		}
		w.o.Metrics.Stage.With(StageStep).Observe((took - decode).Seconds())
		if decode > 0 {
			w.o.Metrics.Stage.With(StageDecode).Observe(decode.Seconds())
		}
		free, peak := rb.Memory()
		w.memory.observe(shape, images, peak)
		free = w.underBudget(head, images, free, peak)
		w.lastFree.Store(free)
		if ctx.Err() != nil {
			continue // shutting down: no new jobs join
		}
		limit, per := w.maxImages(shape, rb.Images(), free)
		items := rb.Items()
		for k := range items {
			if m := members[items[k].ID]; m != nil {
				items[k].Job, items[k].Tenant = m.a.job.ID, m.a.job.Tenant
			}
		}
		st := RunningState{Model: head.Model, Width: head.Width, Height: head.Height, Items: items,
			Images: rb.Images(), MaxImages: limit, FreeMemBytes: free, ImageMemBytes: per}
		for _, p := range w.admitJoin(q, st) {
			if a := w.begin(ctx, p); a != nil {
				w.o.Metrics.Joins.Inc()
				join(a)
			}
		}
	}
}

// While a step runs the queue is looked at every fillPoll for fillBurst
// polls after a kick (a job was enqueued; the consumer may show it a
// moment later), and otherwise only every fillFallback, so that an idle
// queue costs no NATS round trips per step.
const (
	fillPoll     = 3 * time.Millisecond
	fillBurst    = 20
	fillFallback = 50 * time.Millisecond
)

// fillDuring keeps the window filled from the queue until stop is closed
// (the step ends), so that a job arriving during a step can join at the
// step's end.
func (w *Worker) fillDuring(ctx context.Context, q *window, stop <-chan struct{}) {
	t := time.NewTimer(fillFallback)
	defer t.Stop()
	burst := 0
	for {
		w.fillWindow(ctx, q)
		wait := fillFallback
		if burst > 0 {
			wait, burst = fillPoll, burst-1
		}
		t.Reset(wait)
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-q.kick:
			burst = fillBurst
		case <-t.C:
		}
	}
}

// fillWindow takes queued jobs into the window until it is full or the
// queue is empty, without waiting (nothing while the worker is drained).
func (w *Worker) fillWindow(ctx context.Context, q *window) {
	for q.len() < w.o.Window && !w.draining.Load() {
		msg := w.fetch(ctx)
		if msg == nil {
			return
		}
		if p, ok := w.admit(ctx, msg); ok {
			q.mu.Lock()
			q.pending = append(q.pending, p)
			q.mu.Unlock()
		}
	}
}

// admitJoin removes from the window and returns the pending jobs that
// join the running batch st now: the scheduler's choice when it is an
// Admitter (checked; a bad answer falls back to the default), else
// compatible jobs in priority and arrival order while they fit.
func (w *Worker) admitJoin(q *window, st RunningState) []pendingMsg {
	if st.Images >= st.MaxImages {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return nil
	}
	snapshot := make([]Pending, len(q.pending))
	for i, p := range q.pending {
		snapshot[i] = p.Pending
	}
	var chosen []int
	if ad, ok := w.o.Scheduler.(Admitter); ok {
		stats := Stats{StepLatency: w.latency.snapshot(shapeKey(&jobs.Params{Model: st.Model, Width: st.Width, Height: st.Height})),
			FreeMemBytes: st.FreeMemBytes, ImageMemBytes: st.ImageMemBytes}
		idx, err := ad.Admit(time.Now(), st, snapshot, stats)
		if err == nil {
			err = checkAdmission(idx, snapshot, st)
		}
		if err != nil {
			w.log.Warn("admission answer rejected, using the default", "err", err)
		} else {
			chosen = idx
		}
		if err == nil && len(chosen) == 0 {
			return nil
		}
	}
	if chosen == nil {
		chosen = DefaultAdmission(st, snapshot)
	}
	taken := map[int]bool{}
	out := make([]pendingMsg, 0, len(chosen))
	for _, i := range chosen {
		taken[i] = true
		out = append(out, q.pending[i])
	}
	rest := q.pending[:0:0]
	for i, p := range q.pending {
		if !taken[i] {
			rest = append(rest, p)
		}
	}
	q.pending = rest
	return out
}

// Joinable reports whether a pending job may join the running batch st:
// the same model and image size.
func Joinable(st RunningState, p *jobs.Params) bool {
	return p.Model == st.Model && p.Width == st.Width && p.Height == st.Height
}

// DefaultAdmission is the admission of schedulers that are not Admitters:
// joinable jobs, highest priority then oldest first, while their images
// fit in st.MaxImages.
func DefaultAdmission(st RunningState, pending []Pending) []int {
	var idx []int
	for i := range pending {
		if Joinable(st, &pending[i].Job.Params) {
			idx = append(idx, i)
		}
	}
	sortFCFS(pending, idx)
	images := st.Images
	var out []int
	for _, i := range idx {
		n := max(pending[i].Job.Params.N, 1)
		if images+n > st.MaxImages {
			continue
		}
		images += n
		out = append(out, i)
	}
	return out
}

// checkAdmission validates an Admitter's answer: indices in range, unique,
// joinable, and the batch within MaxImages.
func checkAdmission(idx []int, pending []Pending, st RunningState) error {
	seen := map[int]bool{}
	images := st.Images
	for _, i := range idx {
		if i < 0 || i >= len(pending) || seen[i] {
			return fmt.Errorf("worker: admission chose index %d of %d (or twice)", i, len(pending))
		}
		seen[i] = true
		p := &pending[i].Job.Params
		if !Joinable(st, p) {
			return fmt.Errorf("worker: admission chose job %s of another model or size", pending[i].Job.ID)
		}
		images += max(p.N, 1)
	}
	if images > st.MaxImages {
		return fmt.Errorf("worker: admission makes a batch of %d images, at most %d fit", images, st.MaxImages)
	}
	return nil
}
