package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"runtime/debug"
	"time"

	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/worker/modelcache"
)

// runBatch runs the jobs the scheduler chose together: it claims each,
// generates the jobs of one model as one batch (when the model can), and
// hands each finished job to the background for post-processing, storing
// and acknowledging, so that the next batch can start at once. Jobs that
// fail or are canceled are settled here.
func (w *Worker) runBatch(ctx context.Context, chosen []pendingMsg, q *window) {
	var act []*active
	for _, p := range chosen {
		if a := w.begin(ctx, p); a != nil {
			act = append(act, a)
		}
	}
	// One batch per model (a custom scheduler may mix them), in the order
	// chosen.
	var order []string
	byModel := map[string][]*active{}
	for _, a := range act {
		m := a.job.Params.Model
		if _, ok := byModel[m]; !ok {
			order = append(order, m)
		}
		byModel[m] = append(byModel[m], a)
	}
	for _, m := range order {
		g := byModel[m]
		w.o.Metrics.Busy.With(w.o.ID).Set(1)
		start := time.Now()
		stopWatch := w.endCanceled(ctx, g)
		outs, stepped := w.generate(ctx, g, q)
		stopWatch()
		w.o.Metrics.GenerateSeconds.Add(time.Since(start).Seconds())
		w.o.Metrics.Busy.With(w.o.ID).Set(0)
		if stepped {
			continue // a running batch: each job was finished as it left
		}
		for k, a := range g {
			w.finish(ctx, a, outs[k])
		}
	}
}

// finish hands a job whose generation is over to the background for
// post-processing, storing and acknowledging, or settles it here when it
// failed or has already ended (canceled).
func (w *Worker) finish(ctx context.Context, a *active, r BatchResult) {
	if r.Err == nil {
		if n := len(r.Result.Images); n != a.job.Params.N {
			r.Err = fmt.Errorf("engine returned %d images for n=%d", n, a.job.Params.N)
		}
	}
	if r.Err != nil || a.ended.Load() {
		w.end(ctx, a, nil, r.Err)
		return
	}
	w.slots <- struct{}{} // bounded: wait while too many jobs are finishing
	w.finishing.Add(1)
	go func() {
		defer w.finishing.Done()
		defer func() { <-w.slots }()
		start := time.Now()
		imgs, err := w.postProcess(a, r.Result)
		if w.o.Post != nil {
			w.o.Metrics.Stage.With(StagePost).Observe(time.Since(start).Seconds())
		}
		w.end(ctx, a, imgs, err)
	}()
}

// endCanceled settles each job of a batch as canceled as soon as its
// cancellation arrives, while the rest of the batch goes on (the engine
// drops its rows at the next step; its outcome is ignored). The returned
// function stops watching.
func (w *Worker) endCanceled(ctx context.Context, g []*active) func() {
	stops := make([]func(), len(g))
	for i, a := range g {
		stops[i] = w.watchCancel(ctx, a)
	}
	return func() {
		for _, stop := range stops {
			stop()
		}
	}
}

// watchCancel settles a running job as canceled as soon as its
// cancellation arrives; the returned function stops watching.
func (w *Worker) watchCancel(ctx context.Context, a *active) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-done:
		case <-a.ctx.Done():
			if errors.Is(context.Cause(a.ctx), errCanceled) {
				w.end(ctx, a, nil, context.Canceled)
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// begin claims a chosen job and starts keeping its message alive; nil when
// the job needs no run (it is settled here).
func (w *Worker) begin(ctx context.Context, p pendingMsg) *active {
	msg := p.msg
	claimStart := time.Now()
	j, err := w.claim(ctx, p.Job)
	w.o.Metrics.Stage.With(StageClaim).Observe(time.Since(claimStart).Seconds())
	switch {
	case errors.Is(err, errSkip):
		_ = msg.Ack()
		return nil
	case errors.Is(err, jobs.ErrNotFound):
		_ = msg.Term()
		return nil
	case err != nil:
		w.log.Warn("claim failed; leaving the job for redelivery", "job", p.Job.ID, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return nil
	}
	if j.Status != jobs.StatusRunning {
		w.o.Metrics.JobsFinished.With(j.Status).Inc()
		_ = msg.Ack()
		return nil
	}
	if j.Attempts > 1 {
		w.o.Metrics.Redeliveries.Inc()
	}
	w.o.Metrics.QueueWait.Observe(j.StartedAt.Sub(j.CreatedAt).Seconds())
	w.o.Metrics.Stage.With(StageQueueWait).Observe(j.StartedAt.Sub(j.CreatedAt).Seconds())
	log := w.log.With("job", j.ID, "tenant", j.Tenant, "attempt", j.Attempts)
	log.Info("job started")
	jobCtx, cancel := context.WithCancelCause(context.Background())
	a := &active{msg: msg, job: j, ctx: jobCtx, cancel: cancel, log: log, start: time.Now(), stop: make(chan struct{})}
	w.mu.Lock()
	w.running = append(w.running, a)
	w.mu.Unlock()
	a.bg.Add(1)
	go w.keepAlive(ctx, a)
	return a
}

// keepAlive keeps a claimed job's message from being redelivered until
// the job is acknowledged, watches for cancel requests the cancel subject
// missed, and on shutdown gives the job its grace period, then hands it
// back (cancels it with errHandBack).
func (w *Worker) keepAlive(ctx context.Context, a *active) {
	defer a.bg.Done()
	t := time.NewTicker(w.o.Store.AckWait() / 3)
	defer t.Stop()
	var grace <-chan time.Time
	shutdown := ctx.Done()
	for {
		select {
		case <-a.stop:
			return
		case <-shutdown:
			shutdown = nil
			grace = time.After(w.o.ShutdownTimeout)
			a.log.Info("shutdown: letting the running job finish", "timeout", w.o.ShutdownTimeout)
		case <-grace:
			a.cancel(errHandBack)
		case <-t.C:
			_ = a.msg.InProgress()
			if r, _, err := w.o.Store.Get(a.ctx, a.job.Tenant, a.job.ID); err == nil && r.CancelRequested {
				a.cancel(errCanceled)
			}
		}
	}
}

// end settles a job — succeeded (its PNGs stored), canceled, failed or
// handed back — and acknowledges its message. Only its first call acts.
func (w *Worker) end(ctx context.Context, a *active, images []image.Image, genErr error) {
	if !a.ended.CompareAndSwap(false, true) {
		return
	}
	close(a.stop)
	a.bg.Wait()
	defer func() {
		a.cancel(nil)
		w.mu.Lock()
		for i, r := range w.running {
			if r == a {
				w.running = append(w.running[:i:i], w.running[i+1:]...)
				break
			}
		}
		w.mu.Unlock()
	}()
	j, log, msg := a.job, a.log, a.msg
	cause := context.Cause(a.ctx)
	finish := context.WithoutCancel(ctx)
	switch {
	case genErr == nil:
		if err := w.succeed(finish, j, images); err != nil {
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
	w.o.Metrics.JobDuration.Observe(time.Since(a.start).Seconds())
	if err := msg.DoubleAck(finish); err != nil {
		log.Warn("ack failed; the job may be delivered again and will be skipped", "err", err)
	}
}

// postProcess runs the post-processing hook over a job's images and
// records their metadata in the job.
func (w *Worker) postProcess(a *active, res *Result) (imgs []image.Image, err error) {
	j := a.job
	imgs = res.Images
	if w.o.Post != nil {
		func() {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("panic: %v", r)
					a.log.Error("post-processing panic", "panic", r, "stack", string(debug.Stack()))
				}
			}()
			imgs, err = w.o.Post(a.ctx, j, imgs)
		}()
		if err != nil {
			return nil, fmt.Errorf("post-processing: %w", err)
		}
		if len(imgs) == 0 {
			return nil, errors.New("post-processing returned no images")
		}
	}
	// Seeds: the engine's, or the job seed + index.
	seeds := res.Seeds
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

type modelError struct{ err error }

func (e *modelError) Error() string { return e.err.Error() }
func (e *modelError) Unwrap() error { return e.err }

// generate loads the model of a group of jobs and generates them: as a
// running batch that later jobs join when the model is a StepModel (the
// jobs are then finished as they leave it and stepped is true), as one
// batch when it is a BatchModel, else one after another. Each job
// gets its own outcome; a panic in the engine fails the group's jobs, not
// the worker.
func (w *Worker) generate(wctx context.Context, g []*active, q *window) (out []BatchResult, stepped bool) {
	out = make([]BatchResult, len(g))
	defer func() {
		if r := recover(); r != nil {
			err := fmt.Errorf("worker: engine panic: %v", r)
			w.log.Error("engine panic", "job", g[0].job.ID, "jobs", len(g), "panic", r, "stack", string(debug.Stack()))
			for k := range out {
				out[k] = BatchResult{Err: err}
			}
		}
	}()
	failAll := func(err error) []BatchResult {
		for k := range out {
			out[k] = BatchResult{Err: err}
		}
		return out
	}
	// The batch's context ends once every job's has.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for _, a := range g {
			select {
			case <-a.ctx.Done():
			case <-ctx.Done():
				return
			}
		}
		cancel()
	}()

	name := g[0].job.Params.Model
	m, ok := w.o.Models.Get(name)
	if !ok {
		return failAll(&modelError{fmt.Errorf("model %q is not available on worker %s", name, w.o.ID)}), false
	}
	loadStart := time.Now()
	loaded := false
	res, release, err := w.o.Cache.Acquire(ctx, m.Name, m.Bytes, func(ctx context.Context) (modelcache.Resident, error) {
		loaded = true
		return w.o.Engine.Load(ctx, m)
	})
	if err != nil {
		if ctx.Err() != nil {
			return failAll(ctx.Err()), false
		}
		return failAll(&modelError{fmt.Errorf("loading model %s: %w", m.Name, err)}), false
	}
	defer release()
	if loaded {
		w.o.Metrics.ModelLoad.Observe(time.Since(loadStart).Seconds())
	}
	model := res.(Model)
	if mr, ok := model.(MemoryRecoverer); ok {
		// A step that runs out of memory even split row by row moves the
		// other models off the device before the model goes sequential.
		mr.SetFreeOthers(func(context.Context) error {
			w.o.Cache.Free(m.Name)
			return nil
		})
	}
	if sm, ok := model.(StepModel); ok && q != nil && canStep(sm) {
		stepped = true
		w.runSteps(wctx, sm, g, q)
		return nil, true
	}

	var items []BatchItem
	var of []int // job index of each item
	for k, a := range g {
		req, err := w.request(a)
		if err != nil {
			out[k].Err = err
			continue
		}
		items = append(items, BatchItem{Ctx: a.ctx, Request: req})
		of = append(of, k)
	}
	if len(items) == 0 {
		return out, false
	}
	rec := &stepRecorder{w: w}
	reporters := make([]func(Progress), len(items))
	images := 0
	for i, it := range items {
		reporters[i] = w.reporter(g[of[i]].job, it.Request.N, rec)
		images += it.Request.N
	}
	if bm, ok := model.(BatchModel); ok && (len(items) > 1 || w.o.Memory != nil) {
		w.o.Metrics.BatchImages.Observe(float64(images))
		mr := MemoryRun{Manager: w.o.Memory, Model: m.Name, FreeOthers: func(context.Context) error {
			w.o.Cache.Free(m.Name)
			return nil
		}}
		res, rep := RunUnderMemory(ctx, mr, items, bm.GenerateBatch, func(i int, p Progress) {
			if i >= 0 && i < len(reporters) {
				reporters[i](p)
			}
		})
		if rep.Recovered() {
			w.o.Logger.Warn("batch recovered from out of memory", "model", m.Name, "splits", rep.Splits,
				"chunk", rep.Chunk, "freed_others", rep.FreedOthers, "attempts", rep.Attempts)
			for _, k := range of {
				// Reported in the job record when it settles.
				g[k].job.Memory = &jobs.MemoryRecovery{Splits: rep.Splits, Chunk: rep.Chunk, FreedOthers: rep.FreedOthers, Sequential: rep.Sequential}
			}
		}
		if len(res) != len(items) {
			return failAll(fmt.Errorf("engine returned %d results for a batch of %d", len(res), len(items))), false
		}
		for i, r := range res {
			if r.Err == nil && r.Result == nil {
				r.Err = errors.New("engine returned no result")
			}
			out[of[i]] = r
		}
		return out, false
	}
	for i, it := range items {
		w.o.Metrics.BatchImages.Observe(float64(it.Request.N))
		rec.reset()
		r, err := model.Generate(it.Ctx, it.Request, reporters[i])
		if err == nil && r == nil {
			err = errors.New("engine returned no result")
		}
		out[of[i]] = BatchResult{Result: r, Err: err}
	}
	return out, false
}

// request turns a job into the engine's request, reading its init image.
func (w *Worker) request(a *active) (Request, error) {
	p := &a.job.Params
	req := Request{
		Prompt: p.Prompt, NegativePrompt: p.NegativePrompt, Prompt2: p.Prompt2, NegativePrompt2: p.NegativePrompt2,
		Width: p.Width, Height: p.Height, Steps: p.Steps, N: p.N,
		ClipSkip: p.ClipSkip, Guidance: p.Guidance, Sampler: p.Sampler,
		Seed: p.Seed, Strength: p.Strength, SharedNoise: p.SharedNoise, LoRAs: p.LoRAs, Embeddings: p.Embeddings,
	}
	if m := p.Micro; m != nil {
		req.Micro = family.Micro{
			OriginalSize: [2]int{m.OriginalHeight, m.OriginalWidth}, CropTopLeft: [2]int{m.CropTop, m.CropLeft},
			TargetSize:           [2]int{m.TargetHeight, m.TargetWidth},
			NegativeOriginalSize: [2]int{m.NegativeOriginalHeight, m.NegativeOriginalWidth},
			NegativeCropTopLeft:  [2]int{m.NegativeCropTop, m.NegativeCropLeft},
			NegativeTargetSize:   [2]int{m.NegativeTargetHeight, m.NegativeTargetWidth},
			AestheticScore:       m.AestheticScore, NegativeAestheticScore: m.NegativeAestheticScore,
		}
	}
	if p.InitImage != "" {
		data, err := w.o.Store.GetUpload(a.ctx, a.job.Tenant, p.InitImage)
		if err != nil {
			return req, fmt.Errorf("init image: %w", err)
		}
		img, _, err := image.Decode(bytes.NewReader(data))
		if err != nil {
			return req, fmt.Errorf("init image: %w", err)
		}
		req.InitImage = img
	}
	if err := w.editRequest(a, &req); err != nil {
		return req, err
	}
	return req, nil
}

// reporter returns the progress callback of one job: progress and preview
// events, and step latency for the scheduler.
func (w *Worker) reporter(j *jobs.Job, n int, rec *stepRecorder) func(Progress) {
	genStart := time.Now()
	last := genStart
	shape := shapeKey(&j.Params)
	return func(p Progress) {
		now := time.Now()
		if p.StepTime <= 0 {
			p.StepTime = now.Sub(last)
		}
		if p.Batch <= 0 {
			p.Batch = n
		}
		last = now
		rec.record(&j.Params, shape, p)
		its := 0.0
		if el := now.Sub(genStart).Seconds(); el > 0 {
			its = float64(p.Step) / el
		}
		ev := events.Event{Type: events.TypeProgress, Job: j.ID, Time: now.UTC(), Step: p.Step, Steps: p.Steps, ItPerSec: its}
		if data, err := json.Marshal(ev); err == nil {
			_ = w.o.Conn.Publish(events.ProgressSubject(j.Tenant, j.ID), data)
		}
		if p.Preview != nil && w.o.PreviewEvery > 0 && (p.Step%w.o.PreviewEvery == 0 || p.Step == p.Steps) {
			// JPEG encoding runs off the device loop; a preview is dropped
			// when encoders are all busy (the next one supersedes it).
			// The last step's preview is never dropped.
			select {
			case w.previews <- struct{}{}:
				go func() {
					defer func() { <-w.previews }()
					w.publishPreview(j, p)
				}()
			default:
				if p.Step == p.Steps {
					go w.publishPreview(j, p)
				} else {
					w.o.Metrics.PreviewsDropped.Inc()
				}
			}
		}
	}
}

// stepRecorder counts each model evaluation of one engine call once (the
// jobs of a batch all report the evaluation they shared).
type stepRecorder struct {
	w        *Worker
	lastEval int
}

func (r *stepRecorder) reset() { r.lastEval = 0 }

func (r *stepRecorder) record(params *jobs.Params, shape string, p Progress) {
	if p.Eval != 0 && p.Eval == r.lastEval {
		return
	}
	r.lastEval = p.Eval
	r.w.o.Metrics.StepDuration.Observe(p.StepTime.Seconds())
	r.w.latency.observe(shape, p.Batch, p.StepTime)
	r.w.speed.observe(params.Model, float64(p.Batch)*float64(params.Width)*float64(params.Height)/1e6, p.StepTime)
}

// canStep reports whether a StepModel runs running batches; one that says
// it cannot (CanStep false: a model family with its own sampling loop)
// runs its jobs through GenerateBatch.
func canStep(sm StepModel) bool {
	c, ok := sm.(interface{ CanStep() bool })
	return !ok || c.CanStep()
}
