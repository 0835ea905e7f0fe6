package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // init images
	_ "image/png"  // init images
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/core/modelhash"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/worker/modelcache"
)

var (
	errEmptyImage = errors.New("worker: empty image")
	errCanceled   = errors.New("job canceled")
	errHandBack   = errors.New("worker shutting down")
	errSkip       = errors.New("skip")
)

// PostProcessor transforms a job's images before they are stored (the hook
// for post-processing nodes); nil means none. The worker calls it on a
// goroutine of its own once the job's generation is done, while it starts
// its next batch; ctx ends when the job is canceled or handed back.
type PostProcessor func(ctx context.Context, j *jobs.Job, imgs []image.Image) ([]image.Image, error)

// Options configure a Worker.
type Options struct {
	// ID names the worker; empty makes one from the host name.
	ID     string
	Store  *jobs.Store
	Conn   *nats.Conn
	Engine Engine
	Models *catalog.Registry
	Cache  *modelcache.Cache
	// Memory is the device's memory manager (nil: none): batches book
	// their activation memory with it, and an out-of-memory failure splits
	// the batch and frees other models before any job fails.
	Memory *memory.Manager
	// Scheduler picks the next jobs; nil means FCFS.
	Scheduler Scheduler
	Metrics   *Metrics
	Logger    *slog.Logger
	// Window is how many jobs the worker takes from the queue before
	// choosing among them (1: strictly one at a time).
	Window int
	// MaxBatch caps the images of a running batch that jobs join at step
	// boundaries (models that are StepModels; default Window). The worker
	// lowers it further where the measured activation memory per image
	// and the device's free memory say fewer fit.
	MaxBatch int
	// Previews: longest side, JPEG quality, every how many steps (0: none).
	PreviewSize, PreviewQuality, PreviewEvery int
	// HeartbeatInterval is how often the worker announces itself.
	HeartbeatInterval time.Duration
	// ShutdownTimeout is how long running jobs (generating or
	// post-processing) may go on after Run's context ends before they are
	// handed back.
	ShutdownTimeout time.Duration
	// GPUs reads GPU metrics for heartbeats (nil: none).
	GPUs func() []events.GPU
	// Post runs after generation (nil: nothing).
	Post PostProcessor
	// Placement decides which fetched jobs the worker holds on a host of
	// several GPUs (nil: all of them).
	Placement Placement
	// MaxFinishing bounds the jobs whose post-processing and storing may
	// run behind the next batches (default 2×Window, at least 4); when
	// that many are still finishing, the worker waits before it starts
	// another batch.
	MaxFinishing int
}

// Worker takes jobs from the queue and runs them.
type Worker struct {
	o      Options
	log    *slog.Logger
	hashes modelhash.Cache

	mu      sync.Mutex
	running []*active // claimed jobs, generating or finishing

	queue     *jobs.FairQueue
	win       atomic.Pointer[window] // the window of Run, for heartbeats
	draining  atomic.Bool            // an operator drained the worker
	latency   latencyTable
	memory    memoryTable
	lastFree  atomic.Int64 // device memory free at the last step boundary (0: unknown)
	speed     speedTable
	finishing sync.WaitGroup
	slots     chan struct{} // one per job finishing in the background
	previews  chan struct{} // one per preview being encoded and published
	idleSince time.Time     // start of the engine's current run of idle work (zero: none)
	idleSpent time.Duration // time spent in that run
}

// active is a job this worker has claimed, from the claim to its ack.
type active struct {
	msg    jetstream.Msg
	job    *jobs.Job
	ctx    context.Context // ends when the job is canceled or handed back
	cancel context.CancelCauseFunc
	log    *slog.Logger
	start  time.Time
	stop   chan struct{} // closed to stop the keep-alive
	bg     sync.WaitGroup
	ended  atomic.Bool // end has run (a canceled job of a batch ends early)
}

// New checks opts and returns a worker.
func New(o Options) (*Worker, error) {
	if o.Store == nil || o.Conn == nil || o.Engine == nil || o.Models == nil || o.Cache == nil || o.Metrics == nil {
		return nil, errors.New("worker: Store, Conn, Engine, Models, Cache and Metrics are required")
	}
	if o.ID == "" {
		host, _ := os.Hostname()
		var b [3]byte
		_, _ = rand.Read(b[:])
		o.ID = fmt.Sprintf("%s-%s", host, hex.EncodeToString(b[:]))
	}
	if o.Scheduler == nil {
		o.Scheduler = FCFS{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Window <= 0 {
		o.Window = 1
	}
	if o.PreviewSize <= 0 {
		o.PreviewSize = 128
	}
	if o.PreviewQuality <= 0 {
		o.PreviewQuality = 70
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = 2 * time.Second
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 30 * time.Second
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = o.Window
	}
	if o.MaxFinishing <= 0 {
		o.MaxFinishing = max(2*o.Window, 4)
	}
	return &Worker{o: o, log: o.Logger.With("worker", o.ID), slots: make(chan struct{}, o.MaxFinishing),
		previews: make(chan struct{}, max(runtime.GOMAXPROCS(0), 8)), queue: o.Store.FairQueue()}, nil
}

// ID returns the worker's name.
func (w *Worker) ID() string { return w.o.ID }

// StepLatency returns the step latency the worker has measured per batch
// size for a model at one image size (what its scheduler is given).
func (w *Worker) StepLatency(model string, width, height int) []StepLatency {
	return w.latency.snapshot(shapeKey(&jobs.Params{Model: model, Width: width, Height: height}))
}

type pendingMsg struct {
	msg jetstream.Msg
	Pending
}

// Run takes and runs jobs until ctx ends, then lets the running jobs
// finish within the shutdown timeout (or hands them back), waits for the
// jobs still post-processing, and hands back the jobs it holds but has
// not started.
func (w *Worker) Run(ctx context.Context) error {
	kick := make(chan string, 1)
	kickSub, err := w.o.Conn.Subscribe(events.KickSubject, func(m *nats.Msg) {
		select {
		case kick <- string(m.Data):
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("worker: subscribe: %w", err)
	}
	defer kickSub.Unsubscribe()
	cancelSub, err := w.o.Conn.Subscribe(events.CancelWildcard, func(m *nats.Msg) {
		if tenant, id, ok := events.SplitSubject(m.Subject); ok {
			w.cancelRunning(tenant, id)
		}
	})
	if err != nil {
		return fmt.Errorf("worker: subscribe: %w", err)
	}
	defer cancelSub.Unsubscribe()
	drainSub, err := w.o.Conn.Subscribe(events.DrainSubject, func(m *nats.Msg) {
		var d events.Drain
		if json.Unmarshal(m.Data, &d) != nil || d.Worker != w.o.ID {
			return
		}
		w.draining.Store(d.Drain)
		w.log.Info("drain changed by the operator", "draining", d.Drain)
		select {
		case kick <- "":
		default:
		}
		if data, err := json.Marshal(w.heartbeat(false)); err == nil {
			_ = m.Respond(data)
		}
	})
	if err != nil {
		return fmt.Errorf("worker: subscribe: %w", err)
	}
	defer drainSub.Unsubscribe()

	hbDone := make(chan struct{})
	hbStopped := make(chan struct{})
	go w.heartbeats(hbDone, hbStopped)
	defer func() {
		close(hbDone)
		<-hbStopped
	}()

	q := &window{kick: kick}
	w.win.Store(q)
	w.o.Cache.SetDemand(w.placedDemand(q.demand)) // eviction policies see the window's jobs per model
	kaDone := make(chan struct{})
	kaStopped := make(chan struct{})
	go func() { // keep held-but-unstarted messages from being redelivered
		defer close(kaStopped)
		t := time.NewTicker(w.o.Store.AckWait() / 3)
		defer t.Stop()
		for {
			select {
			case <-kaDone:
				return
			case <-t.C:
				q.mu.Lock()
				for _, p := range q.pending {
					_ = p.msg.InProgress()
				}
				q.mu.Unlock()
			}
		}
	}()
	defer func() {
		close(kaDone)
		<-kaStopped
		q.mu.Lock()
		for _, p := range q.pending {
			w.handBack(p.msg, p.Job) // never started
		}
		q.pending = nil
		q.mu.Unlock()
	}()

	w.log.Info("worker started", "device", w.o.Engine.Device())
	kicked := ""
	for ctx.Err() == nil {
		if w.draining.Load() {
			// Drained: held jobs go back to the queue, none is taken.
			q.mu.Lock()
			for _, p := range q.pending {
				w.handBack(p.msg, p.Job)
			}
			q.pending = nil
			q.mu.Unlock()
			w.idle(ctx, kick, time.Second)
			continue
		}
		// Fill the window in fair order.
		for {
			q.mu.Lock()
			n := len(q.pending)
			q.mu.Unlock()
			if n >= w.o.Window {
				break
			}
			msg := w.fetch(ctx)
			if msg == nil && kicked != "" {
				// A job was just enqueued: give the consumer a moment to
				// see it.
				msg = w.fetchWait(ctx, kicked, 250*time.Millisecond)
			}
			kicked = ""
			if msg == nil {
				break
			}
			if p, ok := w.admit(ctx, msg); ok {
				if !w.place(p) { // left for a GPU holding the model
					w.handBack(p.msg, p.Job)
					break
				}
				q.mu.Lock()
				q.pending = append(q.pending, p)
				q.mu.Unlock()
			}
		}
		q.mu.Lock()
		snapshot := make([]Pending, len(q.pending))
		for i, p := range q.pending {
			snapshot[i] = p.Pending
		}
		q.mu.Unlock()
		if len(snapshot) == 0 {
			w.trimIdle()
			if w.idleWork(ctx) {
				continue // look at the queue again before more idle work
			}
			kicked = w.idle(ctx, kick, time.Second)
			continue
		}
		hk := shapeKey(&snapshot[head(snapshot)].Job.Params)
		stats := Stats{StepLatency: w.latency.snapshot(hk), FreeMemBytes: w.lastFree.Load(), ImageMemBytes: w.memory.get(hk)}
		d, err := w.o.Scheduler.Decide(time.Now(), snapshot, stats)
		if err == nil {
			err = checkDecision(d, len(snapshot), 10*time.Second)
		}
		if err != nil {
			w.log.Warn("scheduler answer rejected, using FCFS", "err", err)
			d, _ = FCFS{}.Decide(time.Now(), snapshot, stats)
		}
		if len(d.Run) == 0 {
			kicked = w.idle(ctx, kick, d.Wait)
			continue
		}
		q.mu.Lock()
		chosen := make([]pendingMsg, 0, len(d.Run))
		taken := map[int]bool{}
		for _, i := range d.Run {
			chosen = append(chosen, q.pending[i])
			taken[i] = true
		}
		rest := q.pending[:0:0]
		for i, p := range q.pending {
			if !taken[i] {
				rest = append(rest, p)
			}
		}
		q.pending = rest
		q.mu.Unlock()
		if ctx.Err() != nil {
			// Shutting down: hand back what has not started.
			for _, c := range chosen {
				w.handBack(c.msg, c.Job)
			}
			break
		}
		w.runBatch(ctx, chosen, q)
	}
	// Jobs still post-processing or storing finish (or, past the grace
	// period, are handed back) before the worker stops.
	w.finishing.Wait()
	w.log.Info("worker stopped")
	return nil
}

// idleWork gives the engine, when it is an Idler, one slice of its
// between-jobs work (warm-up, kernel tuning) and reports whether more is
// left; the end of a run of such work is logged with its duration.
func (w *Worker) idleWork(ctx context.Context) bool {
	idler, ok := w.o.Engine.(Idler)
	if !ok || ctx.Err() != nil {
		return false
	}
	start := time.Now()
	more := idler.Idle(ctx)
	took := time.Since(start)
	w.o.Metrics.IdleWork.Add(took.Seconds())
	if w.idleSince.IsZero() && more {
		w.idleSince = start
		w.log.Info("warming up and tuning the device between jobs")
	}
	w.idleSpent += took
	if !more && !w.idleSince.IsZero() {
		w.log.Info("device warm-up and tuning done", "seconds", w.idleSpent.Seconds())
		w.idleSince, w.idleSpent = time.Time{}, 0
	}
	return more
}

// idle waits for a kick, the timeout or the end of ctx, and returns the
// priority that a kick announced ("" otherwise).
func (w *Worker) idle(ctx context.Context, kick <-chan string, d time.Duration) string {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case p := <-kick:
		if jobs.ValidPriority(p) {
			return p
		}
	case <-t.C:
	}
	return ""
}

// fetchWait waits up to d for a message (a kick announced one).
func (w *Worker) fetchWait(ctx context.Context, _ string, d time.Duration) jetstream.Msg {
	if ctx.Err() != nil {
		return nil
	}
	msg, err := w.queue.Wait(ctx, d)
	if err != nil && ctx.Err() == nil {
		w.log.Warn("fetch failed", "err", err)
	}
	return msg
}

// fetch returns the next message in fair order (across tenants by weight,
// within a tenant by priority), without waiting.
func (w *Worker) fetch(ctx context.Context) jetstream.Msg {
	if ctx.Err() != nil {
		return nil
	}
	msg, err := w.queue.Next(ctx, false)
	if err != nil && ctx.Err() == nil {
		w.log.Warn("fetch failed", "err", err)
	}
	return msg
}

// admit reads a message's job record; jobs that need no run are settled
// here.
func (w *Worker) admit(ctx context.Context, msg jetstream.Msg) (pendingMsg, bool) {
	var qm jobs.QueueMessage
	if err := json.Unmarshal(msg.Data(), &qm); err != nil {
		w.log.Warn("dropping undecodable queue message", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return pendingMsg{}, false
	}
	j, _, err := w.o.Store.Get(ctx, qm.Tenant, qm.ID)
	if errors.Is(err, jobs.ErrNotFound) {
		w.log.Warn("dropping message of a job without record", "job", qm.ID)
		_ = msg.Term()
		return pendingMsg{}, false
	}
	if err != nil {
		w.log.Warn("reading job record failed; leaving it for redelivery", "job", qm.ID, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return pendingMsg{}, false
	}
	if jobs.Final(j.Status) {
		_ = msg.Ack() // finished before a crash lost the ack
		return pendingMsg{}, false
	}
	return pendingMsg{msg: msg, Pending: Pending{Job: j, Arrived: time.Now()}}, true
}

// claim marks the job running by this worker, or settles it.
func (w *Worker) claim(ctx context.Context, j *jobs.Job) (*jobs.Job, error) {
	now := time.Now().UTC()
	return w.o.Store.Update(ctx, j.Tenant, j.ID, func(r *jobs.Job) error {
		switch {
		case jobs.Final(r.Status):
			return errSkip
		case r.CancelRequested:
			r.Status, r.FinishedAt = jobs.StatusCanceled, &now
			return nil
		case r.Attempts >= w.o.Store.Attempts():
			r.Status, r.FinishedAt = jobs.StatusFailed, &now
			r.Error = &jobs.Error{Code: jobs.ErrCodeAttempts,
				Message: fmt.Sprintf("the job was started %d times and its worker stopped each time", r.Attempts)}
			return nil
		}
		r.Attempts++
		r.Status, r.Worker, r.StartedAt, r.Error = jobs.StatusRunning, w.o.ID, &now, nil
		return nil
	})
}

// handBack returns a job to the queue: a fresh message, then the old one
// acknowledged (falling back to a negative acknowledgement).
func (w *Worker) handBack(msg jetstream.Msg, j *jobs.Job) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.o.Store.Requeue(ctx, j); err != nil {
		w.log.Warn("requeue failed; leaving the job to redelivery", "job", j.ID, "err", err)
		_ = msg.Nak()
		return
	}
	_ = msg.Ack()
}

func (w *Worker) publishPreview(j *jobs.Job, p Progress) {
	data, pw, ph, err := previewJPEG(p.Preview, w.o.PreviewSize, w.o.PreviewQuality)
	if err != nil {
		return
	}
	frame, err := events.EncodePreview(events.Preview{Job: j.ID, Step: p.Step, Steps: p.Steps, Width: pw, Height: ph, JPEG: data})
	if err != nil {
		return
	}
	if w.o.Conn.Publish(events.PreviewSubject(j.Tenant, j.ID), frame) == nil {
		w.o.Metrics.PreviewFrames.Inc()
	}
}

// succeed stores the PNGs and marks the job succeeded, if this worker
// still owns it.
func (w *Worker) succeed(ctx context.Context, j *jobs.Job, imgs []image.Image) error {
	stage := w.o.Metrics.Stage
	for i, img := range imgs {
		meta := j.Images[i]
		start := time.Now()
		data, err := encodePNG(img, w.parametersText(ctx, j.Params, meta.Seed, meta.Width, meta.Height))
		if err != nil {
			return err
		}
		stored := time.Now()
		stage.With(StagePNG).Observe(stored.Sub(start).Seconds())
		if err := w.o.Store.PutImage(ctx, j.Tenant, meta.ID, data); err != nil {
			return err
		}
		stage.With(StageStore).Observe(time.Since(stored).Seconds())
	}
	start := time.Now()
	w.settle(ctx, j, func(r *jobs.Job) {
		r.Status = jobs.StatusSucceeded
		r.Images = j.Images
		r.Memory = j.Memory
	})
	stage.With(StageSettle).Observe(time.Since(start).Seconds())
	w.o.Metrics.Images.Add(float64(len(imgs)))
	w.log.Info("job succeeded", "job", j.ID, "images", len(imgs))
	return nil
}

func (w *Worker) fail(ctx context.Context, j *jobs.Job, code, message string) {
	w.settle(ctx, j, func(r *jobs.Job) {
		r.Status = jobs.StatusFailed
		r.Error = &jobs.Error{Code: code, Message: message}
		r.Memory = j.Memory
	})
}

// settle writes a final state, fenced on this worker's claim (a worker
// that lost the job to a redelivery does not overwrite the new owner).
func (w *Worker) settle(ctx context.Context, j *jobs.Job, fn func(*jobs.Job)) {
	r, err := w.o.Store.Update(ctx, j.Tenant, j.ID, func(r *jobs.Job) error {
		if r.Worker != w.o.ID || r.Attempts != j.Attempts || r.Status != jobs.StatusRunning {
			return errSkip
		}
		fn(r)
		now := time.Now().UTC()
		r.FinishedAt = &now
		return nil
	})
	switch {
	case errors.Is(err, errSkip):
		w.log.Warn("job was taken over by another delivery; dropping this result", "job", j.ID)
	case err != nil:
		w.log.Error("final update failed", "job", j.ID, "err", err)
	default:
		w.o.Metrics.JobsFinished.With(r.Status).Inc()
	}
}

// cancelRunning stops the named job if this worker runs it (generating
// or finishing).
func (w *Worker) cancelRunning(tenant, id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.running {
		if a.job.Tenant == tenant && a.job.ID == id {
			a.cancel(errCanceled)
		}
	}
}

// heartbeat describes the worker now.
func (w *Worker) heartbeat(stop bool) events.Heartbeat {
	hb := events.Heartbeat{Worker: w.o.ID, Device: w.o.Engine.Device(), Time: time.Now().UTC(), Stopped: stop,
		Speed: w.speed.snapshot(), Draining: w.draining.Load(), Queued: w.queued()}
	w.mu.Lock()
	if len(w.running) > 0 {
		hb.Busy, hb.Job = true, w.running[0].job.ID
	}
	w.mu.Unlock()
	for _, m := range w.o.Cache.Resident() {
		hb.Models = append(hb.Models, m.ID)
	}
	if w.o.GPUs != nil {
		hb.GPUs = w.o.GPUs()
	}
	if w.o.Memory != nil {
		hb.Memory = w.o.Memory.Models()
	}
	return hb
}

func (w *Worker) heartbeats(done <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	t := time.NewTicker(w.o.HeartbeatInterval)
	defer t.Stop()
	send := func(stop bool) {
		if data, err := json.Marshal(w.heartbeat(stop)); err == nil {
			_ = w.o.Conn.Publish(events.HeartbeatSubject, data)
		}
	}
	send(false)
	for {
		select {
		case <-done:
			send(true)
			_ = w.o.Conn.Flush()
			return
		case <-t.C:
			send(false)
		}
	}
}
