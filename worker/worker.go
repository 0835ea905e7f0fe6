package worker

import (
	"bytes"
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
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/server/models"
	"github.com/kiln-project/kiln/server/pngtext"
	"github.com/kiln-project/kiln/worker/modelcache"
)

var (
	errEmptyImage = errors.New("worker: empty image")
	errCanceled   = errors.New("job canceled")
	errHandBack   = errors.New("worker shutting down")
	errSkip       = errors.New("skip")
)

// PostProcessor transforms a job's images before they are stored (the hook
// for post-processing nodes); nil means none.
type PostProcessor func(ctx context.Context, j *jobs.Job, imgs []image.Image) ([]image.Image, error)

// Options configure a Worker.
type Options struct {
	// ID names the worker; empty makes one from the host name.
	ID     string
	Store  *jobs.Store
	Conn   *nats.Conn
	Engine Engine
	Models *models.Registry
	Cache  *modelcache.Cache
	// Scheduler picks the next jobs; nil means FCFS.
	Scheduler Scheduler
	Metrics   *Metrics
	Logger    *slog.Logger
	// Window is how many jobs the worker takes from the queue before
	// choosing among them (1: strictly one at a time).
	Window int
	// Previews: longest side, JPEG quality, every how many steps (0: none).
	PreviewSize, PreviewQuality, PreviewEvery int
	// HeartbeatInterval is how often the worker announces itself.
	HeartbeatInterval time.Duration
	// ShutdownTimeout is how long a running job may go on after Run's
	// context ends before it is handed back.
	ShutdownTimeout time.Duration
	// GPUs reads GPU metrics for heartbeats (nil: none).
	GPUs func() []events.GPU
	// Post runs after generation (nil: nothing).
	Post PostProcessor
}

// Worker takes jobs from the queue and runs them.
type Worker struct {
	o   Options
	log *slog.Logger

	mu      sync.Mutex
	current *running
}

type running struct {
	tenant, id string
	cancel     context.CancelCauseFunc
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
	return &Worker{o: o, log: o.Logger.With("worker", o.ID)}, nil
}

// ID returns the worker's name.
func (w *Worker) ID() string { return w.o.ID }

type pendingMsg struct {
	msg jetstream.Msg
	Pending
}

// Run takes and runs jobs until ctx ends, then lets the running job finish
// within the shutdown timeout (or hands it back) and hands back the jobs
// it holds but has not started.
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

	hbDone := make(chan struct{})
	hbStopped := make(chan struct{})
	go w.heartbeats(hbDone, hbStopped)
	defer func() {
		close(hbDone)
		<-hbStopped
	}()

	var mu sync.Mutex
	var pending []pendingMsg
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
				mu.Lock()
				for _, p := range pending {
					_ = p.msg.InProgress()
				}
				mu.Unlock()
			}
		}
	}()
	defer func() {
		close(kaDone)
		<-kaStopped
		mu.Lock()
		for _, p := range pending {
			w.handBack(p.msg, p.Job) // never started
		}
		pending = nil
		mu.Unlock()
	}()

	w.log.Info("worker started", "device", w.o.Engine.Device())
	kicked := ""
	for ctx.Err() == nil {
		// Fill the window, highest priority first.
		for {
			mu.Lock()
			n := len(pending)
			mu.Unlock()
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
				mu.Lock()
				pending = append(pending, p)
				mu.Unlock()
			}
		}
		mu.Lock()
		snapshot := make([]Pending, len(pending))
		for i, p := range pending {
			snapshot[i] = p.Pending
		}
		mu.Unlock()
		if len(snapshot) == 0 {
			kicked = w.idle(ctx, kick, time.Second)
			continue
		}
		d, err := w.o.Scheduler.Decide(time.Now(), snapshot)
		if err == nil {
			err = checkDecision(d, len(snapshot), 10*time.Second)
		}
		if err != nil {
			w.log.Warn("scheduler answer rejected, using FCFS", "err", err)
			d, _ = FCFS{}.Decide(time.Now(), snapshot)
		}
		if len(d.Run) == 0 {
			kicked = w.idle(ctx, kick, d.Wait)
			continue
		}
		mu.Lock()
		chosen := make([]pendingMsg, 0, len(d.Run))
		taken := map[int]bool{}
		for _, i := range d.Run {
			chosen = append(chosen, pending[i])
			taken[i] = true
		}
		rest := pending[:0:0]
		for i, p := range pending {
			if !taken[i] {
				rest = append(rest, p)
			}
		}
		pending = rest
		mu.Unlock()
		for i, p := range chosen {
			if ctx.Err() != nil {
				// Shutting down: hand back what has not started.
				for _, q := range chosen[i:] {
					w.handBack(q.msg, q.Job)
				}
				break
			}
			w.process(ctx, p)
		}
	}
	w.log.Info("worker stopped")
	return nil
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

// fetchWait waits up to d for a message of one priority.
func (w *Worker) fetchWait(ctx context.Context, priority string, d time.Duration) jetstream.Msg {
	if ctx.Err() != nil {
		return nil
	}
	batch, err := w.o.Store.Consumer(priority).Fetch(1, jetstream.FetchMaxWait(d))
	if err != nil {
		return nil
	}
	for msg := range batch.Messages() {
		return msg
	}
	return nil
}

// fetch returns the next message, highest priority first, without waiting.
func (w *Worker) fetch(ctx context.Context) jetstream.Msg {
	for _, p := range jobs.Priorities() {
		if ctx.Err() != nil {
			return nil
		}
		batch, err := w.o.Store.Consumer(p).FetchNoWait(1)
		if err != nil {
			w.log.Warn("fetch failed", "priority", p, "err", err)
			continue
		}
		for msg := range batch.Messages() {
			return msg
		}
	}
	return nil
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

func (w *Worker) process(ctx context.Context, p pendingMsg) {
	msg := p.msg
	j, err := w.claim(ctx, p.Job)
	switch {
	case errors.Is(err, errSkip):
		_ = msg.Ack()
		return
	case errors.Is(err, jobs.ErrNotFound):
		_ = msg.Term()
		return
	case err != nil:
		w.log.Warn("claim failed; leaving the job for redelivery", "job", p.Job.ID, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if j.Status != jobs.StatusRunning {
		w.o.Metrics.JobsFinished.With(j.Status).Inc()
		_ = msg.Ack()
		return
	}
	if j.Attempts > 1 {
		w.o.Metrics.Redeliveries.Inc()
	}
	w.o.Metrics.QueueWait.Observe(j.StartedAt.Sub(j.CreatedAt).Seconds())
	w.o.Metrics.Busy.With(w.o.ID).Set(1)
	defer w.o.Metrics.Busy.With(w.o.ID).Set(0)
	log := w.log.With("job", j.ID, "tenant", j.Tenant, "attempt", j.Attempts)
	log.Info("job started")

	jobCtx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	w.mu.Lock()
	w.current = &running{tenant: j.Tenant, id: j.ID, cancel: cancel}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.current = nil
		w.mu.Unlock()
	}()

	// Keep the message alive, watch for cancel requests the subject missed,
	// and on shutdown give the job its grace period, then hand it back.
	done := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		t := time.NewTicker(w.o.Store.AckWait() / 3)
		defer t.Stop()
		var grace <-chan time.Time
		shutdown := ctx.Done()
		for {
			select {
			case <-done:
				return
			case <-shutdown:
				shutdown = nil
				grace = time.After(w.o.ShutdownTimeout)
				log.Info("shutdown: letting the running job finish", "timeout", w.o.ShutdownTimeout)
			case <-grace:
				cancel(errHandBack)
			case <-t.C:
				_ = msg.InProgress()
				if r, _, err := w.o.Store.Get(jobCtx, j.Tenant, j.ID); err == nil && r.CancelRequested {
					cancel(errCanceled)
				}
			}
		}
	}()
	start := time.Now()
	images, genErr := w.generate(jobCtx, j)
	close(done)
	bg.Wait()

	cause := context.Cause(jobCtx)
	finish := context.WithoutCancel(ctx)
	switch {
	case genErr == nil:
		err = w.succeed(finish, j, images)
		if err != nil {
			log.Error("storing results failed", "err", err)
			w.fail(finish, j, jobs.ErrCodeEngine, "storing results failed: "+err.Error())
		}
	case errors.Is(cause, errCanceled):
		w.settle(finish, j, func(r *jobs.Job) { r.Status = jobs.StatusCanceled })
		log.Info("job canceled")
	case errors.Is(cause, errHandBack):
		_, err := w.o.Store.Update(finish, j.Tenant, j.ID, func(r *jobs.Job) error {
			if r.Worker != w.o.ID || r.Attempts != j.Attempts || r.Status != jobs.StatusRunning {
				return errSkip
			}
			r.Status, r.Worker, r.StartedAt = jobs.StatusQueued, "", nil
			r.Attempts-- // a graceful hand-back does not use up an attempt
			return nil
		})
		if err != nil && !errors.Is(err, errSkip) {
			log.Warn("hand-back record update failed", "err", err)
		}
		w.handBack(msg, j)
		w.o.Metrics.HandedBack.Inc()
		log.Info("job handed back")
		return
	default:
		var me *modelError
		if errors.As(genErr, &me) {
			w.fail(finish, j, jobs.ErrCodeModel, me.Error())
		} else {
			w.fail(finish, j, jobs.ErrCodeEngine, genErr.Error())
		}
		log.Warn("job failed", "err", genErr)
	}
	w.o.Metrics.JobDuration.Observe(time.Since(start).Seconds())
	if err := msg.DoubleAck(finish); err != nil {
		log.Warn("ack failed; the job may be delivered again and will be skipped", "err", err)
	}
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

type modelError struct{ err error }

func (e *modelError) Error() string { return e.err.Error() }
func (e *modelError) Unwrap() error { return e.err }

// generate loads the model and runs the job, turning panics into errors.
func (w *Worker) generate(ctx context.Context, j *jobs.Job) (imgs []image.Image, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("worker: engine panic: %v", r)
			w.log.Error("engine panic", "job", j.ID, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	m, ok := w.o.Models.Get(j.Params.Model)
	if !ok {
		return nil, &modelError{fmt.Errorf("model %q is not available on worker %s", j.Params.Model, w.o.ID)}
	}
	loadStart := time.Now()
	loaded := false
	res, release, err := w.o.Cache.Acquire(ctx, m.Name, m.Bytes, func(ctx context.Context) (modelcache.Resident, error) {
		loaded = true
		return w.o.Engine.Load(ctx, m)
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &modelError{fmt.Errorf("loading model %s: %w", m.Name, err)}
	}
	defer release()
	if loaded {
		w.o.Metrics.ModelLoad.Observe(time.Since(loadStart).Seconds())
	}
	model := res.(Model)

	req := Request{
		Prompt: j.Params.Prompt, NegativePrompt: j.Params.NegativePrompt,
		Width: j.Params.Width, Height: j.Params.Height, Steps: j.Params.Steps, N: j.Params.N,
		ClipSkip: j.Params.ClipSkip, Guidance: j.Params.Guidance, Sampler: j.Params.Sampler,
		Seed: j.Params.Seed, Strength: j.Params.Strength,
	}
	if j.Params.InitImage != "" {
		data, err := w.o.Store.GetUpload(ctx, j.Tenant, j.Params.InitImage)
		if err != nil {
			return nil, fmt.Errorf("init image: %w", err)
		}
		img, _, err := image.Decode(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("init image: %w", err)
		}
		req.InitImage = img
	}

	genStart := time.Now()
	last := genStart
	progress := func(p Progress) {
		now := time.Now()
		w.o.Metrics.StepDuration.Observe(now.Sub(last).Seconds())
		last = now
		its := 0.0
		if el := now.Sub(genStart).Seconds(); el > 0 {
			its = float64(p.Step) / el
		}
		ev := events.Event{Type: events.TypeProgress, Job: j.ID, Time: now.UTC(), Step: p.Step, Steps: p.Steps, ItPerSec: its}
		if data, err := json.Marshal(ev); err == nil {
			_ = w.o.Conn.Publish(events.ProgressSubject(j.Tenant, j.ID), data)
		}
		if p.Preview != nil && w.o.PreviewEvery > 0 && (p.Step%w.o.PreviewEvery == 0 || p.Step == p.Steps) {
			w.publishPreview(j, p)
		}
	}
	out, err := model.Generate(ctx, req, progress)
	if err != nil {
		return nil, err
	}
	if len(out.Images) != j.Params.N {
		return nil, fmt.Errorf("engine returned %d images for n=%d", len(out.Images), j.Params.N)
	}
	imgs = out.Images
	if w.o.Post != nil {
		if imgs, err = w.o.Post(ctx, j, imgs); err != nil {
			return nil, fmt.Errorf("post-processing: %w", err)
		}
	}
	// Seeds: the engine's, or the job seed + index.
	seeds := out.Seeds
	if len(seeds) != len(imgs) {
		seeds = make([]uint64, len(imgs))
		for i := range seeds {
			seeds[i] = j.Params.Seed + uint64(i)
		}
	}
	j.Images = make([]jobs.Image, len(imgs))
	for i, img := range imgs {
		b := img.Bounds()
		j.Images[i] = jobs.Image{ID: jobs.ImageID(j.ID, i), Seed: seeds[i], Width: b.Dx(), Height: b.Dy()}
	}
	return imgs, nil
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
	for i, img := range imgs {
		meta := j.Images[i]
		data, err := pngtext.Encode(img, pngtext.Chunk{Keyword: "parameters",
			Text: parametersText(j.Params, meta.Seed, meta.Width, meta.Height)})
		if err != nil {
			return err
		}
		if err := w.o.Store.PutImage(ctx, j.Tenant, meta.ID, data); err != nil {
			return err
		}
	}
	w.settle(ctx, j, func(r *jobs.Job) {
		r.Status = jobs.StatusSucceeded
		r.Images = j.Images
	})
	w.o.Metrics.Images.Add(float64(len(imgs)))
	w.log.Info("job succeeded", "job", j.ID, "images", len(imgs))
	return nil
}

func (w *Worker) fail(ctx context.Context, j *jobs.Job, code, message string) {
	w.settle(ctx, j, func(r *jobs.Job) {
		r.Status = jobs.StatusFailed
		r.Error = &jobs.Error{Code: code, Message: message}
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

// cancelRunning stops the running job if it is the one named.
func (w *Worker) cancelRunning(tenant, id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.current != nil && w.current.tenant == tenant && w.current.id == id {
		w.current.cancel(errCanceled)
	}
}

func (w *Worker) heartbeats(done <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	t := time.NewTicker(w.o.HeartbeatInterval)
	defer t.Stop()
	send := func(stop bool) {
		hb := events.Heartbeat{Worker: w.o.ID, Device: w.o.Engine.Device(), Time: time.Now().UTC(), Stopped: stop}
		w.mu.Lock()
		if w.current != nil {
			hb.Busy, hb.Job = true, w.current.id
		}
		w.mu.Unlock()
		for _, m := range w.o.Cache.Resident() {
			hb.Models = append(hb.Models, m.ID)
		}
		if w.o.GPUs != nil {
			hb.GPUs = w.o.GPUs()
		}
		if data, err := json.Marshal(hb); err == nil {
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
