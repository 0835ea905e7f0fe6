package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Running is a batch in flight for step-level (continuous) batching: jobs
// join it between steps (Add) and leave it when their last evaluation is
// done (a hires job when its second pass is done: its first pass's result
// is upscaled at that step and its second pass joins the next one), each with its own prompts, guidance, seeds, sampler, step count,
// strength and sampler state (the per-job state GenerateBatch keeps). Every
// Step makes one UNet call per group of jobs that can share it (same
// latent size and conditioning length), with a timestep per row, so a job
// comes out as it would alone. A Running is not safe for concurrent use,
// and like the pipeline it must be the only user of the backend while one
// of its methods runs.
type Running struct {
	b     *batchRun
	items []*runItem
	ids   map[int]*runItem
	next  int
}

// runItem is one job of a running batch.
type runItem struct {
	st         *batchState
	onProgress func(Progress)
}

// Finished is a job that left a running batch: its outcome and the wall
// time the VAE decode of its step took (shared by the jobs that finished
// together).
type Finished struct {
	ID     int
	Result BatchResult
	Decode time.Duration
}

// ItemState describes one job of a running batch for admission decisions.
type ItemState struct {
	ID int
	// Images is the job's image count; Rows the UNet rows it takes per
	// evaluation (twice its images with guidance).
	Images, Rows int
	// Done and Total count its evaluations.
	Done, Total int
	// Width and Height are its image size in pixels.
	Width, Height int
}

// ErrBatchClosed is the error of jobs still in a running batch when its
// context ends.
var ErrBatchClosed = errors.New("pipeline: running batch stopped")

// NewRunning starts an empty running batch; ctx bounds every job in it.
func (p *Pipeline) NewRunning(ctx context.Context) *Running {
	r := &Running{ids: map[int]*runItem{}}
	r.b = &batchRun{p: p, ctx: ctx, onProgress: r.progress}
	return r
}

// SetRowBuckets makes every UNet call of the batch run a bucketed number
// of rows: bucket(rows) ≥ rows, the extra rows repeating the last one and
// their outputs dropped. A device that specialises its work per shape
// (tuned kernels, captured graphs) then sees a few batch sizes instead of
// every count jobs joining and leaving make. nil runs exact counts.
func (r *Running) SetRowBuckets(bucket func(rows int) int) { r.b.pad = bucket }

// progress routes an evaluation's progress report to its job.
func (r *Running) progress(id int, pr Progress) {
	if it := r.ids[id]; it != nil && it.onProgress != nil {
		it.onProgress(pr)
	}
}

// Add resolves a job — validation, sampler, prompt conditioning (the text
// encoder runs here, between steps), initial noise or img2img encoding —
// and adds it to the batch: its first evaluation is part of the next
// Step. bj.Ctx, when set, cancels this job alone. onProgress, when not
// nil, is called after each of the job's evaluations. The returned id
// names the job in Step's results.
func (r *Running) Add(bj BatchJob, onProgress func(Progress)) (int, error) {
	id := r.next
	st, err := r.b.p.prepare(r.b.ctx, id, bj)
	if err == nil {
		err = st.ctx.Err()
	}
	if err != nil {
		return 0, err
	}
	r.next++
	it := &runItem{st: st, onProgress: onProgress}
	r.items = append(r.items, it)
	r.ids[id] = it
	return id, nil
}

// Len is the number of jobs in the batch.
func (r *Running) Len() int { return len(r.items) }

// Images is the number of images the batch's jobs make.
func (r *Running) Images() int {
	n := 0
	for _, it := range r.items {
		n += it.st.n
	}
	return n
}

// Rows is the number of UNet rows one step of the batch evaluates.
func (r *Running) Rows() int {
	n := 0
	for _, it := range r.items {
		n += it.st.rows()
	}
	return n
}

// Items describes the jobs of the batch, in the order they joined.
func (r *Running) Items() []ItemState {
	out := make([]ItemState, len(r.items))
	f := r.b.p.def.Factor
	for k, it := range r.items {
		st := it.st
		out[k] = ItemState{ID: st.index, Images: st.n, Rows: st.rows(), Done: st.i - st.begin, Total: st.total,
			Width: st.w * f, Height: st.h * f}
	}
	return out
}

// Step runs one evaluation of every job in the batch and returns the jobs
// that left it: finished (their latents decoded, jobs that finished
// together in one VAE call per size), canceled, or failed. A failed shared
// evaluation is retried one job at a time, so one job's failure never
// fails its neighbours. When the batch's context has ended, every job
// leaves with its error.
func (r *Running) Step() []Finished {
	var out []Finished
	leave := func(it *runItem, err error) {
		out = append(out, Finished{ID: it.st.index, Result: BatchResult{Err: err}})
		delete(r.ids, it.st.index)
	}
	if err := r.b.ctx.Err(); err != nil {
		for _, it := range r.items {
			leave(it, fmt.Errorf("%w: %w", ErrBatchClosed, err))
		}
		r.items = nil
		return out
	}
	var active []*batchState
	keep := r.items[:0]
	for _, it := range r.items {
		if err := it.st.ctx.Err(); err != nil {
			leave(it, err) // canceled: its rows leave before this step
			continue
		}
		keep = append(keep, it)
		active = append(active, it.st)
	}
	r.items = keep
	r.b.solo = false // a failed shared call makes this step, not the batch, one job at a time
	for _, g := range r.b.groups(active) {
		r.b.evaluate(g)
	}
	var done []*batchState
	keep = r.items[:0]
	var doneItems []*runItem
	for _, it := range r.items {
		st := it.st
		switch {
		case st.err != nil:
			leave(it, st.err)
		case st.i-st.begin >= st.total:
			done = append(done, st)
			doneItems = append(doneItems, it)
		default:
			keep = append(keep, it)
		}
	}
	r.items = keep
	if len(done) == 0 {
		return out
	}
	start := time.Now()
	r.b.decode(done)
	took := time.Since(start)
	for _, it := range doneItems {
		st := it.st
		if st.err == nil && st.hires != nil {
			// a hires job's first pass: its second pass stays in the batch
			if st.err = st.ctx.Err(); st.err == nil {
				var next *batchState
				if next, st.err = r.b.p.secondPass(r.b.ctx, st); st.err == nil {
					it.st = next
					r.items = append(r.items, it)
					continue
				}
			}
		}
		if st.err != nil {
			out = append(out, Finished{ID: st.index, Result: BatchResult{Err: st.err}, Decode: took})
		} else {
			out = append(out, Finished{ID: st.index, Result: BatchResult{Result: st.res}, Decode: took})
		}
		delete(r.ids, st.index)
	}
	return out
}

// padRows extends a UNet call of rows rows to want rows by repeating the
// last row's input, timestep and conditioning.
func padRows(want, rows int, in, ts, cond []float32) ([]float32, []float32, []float32) {
	if want <= rows || rows == 0 {
		return in, ts, cond
	}
	per, cper := len(in)/rows, len(cond)/rows
	lastIn, lastCond, lastT := in[len(in)-per:], cond[len(cond)-cper:], ts[rows-1]
	for k := rows; k < want; k++ {
		in = append(in, lastIn...)
		cond = append(cond, lastCond...)
		ts = append(ts, lastT)
	}
	return in, ts, cond
}

// WarmUp runs a one-step job of images images at the model's default
// size — with guidance rows when cfg is set, decoded when decode is set —
// and discards it: a device that specialises work per shape meets those
// shapes before a request does.
func (p *Pipeline) WarmUp(ctx context.Context, images int, cfg, decode bool) error {
	req := Request{N: images, Steps: 1, Guidance: 1, SkipDecode: !decode}
	if cfg {
		req.Guidance = 7.5
	}
	if _, err := p.Generate(ctx, req, nil); err != nil {
		return fmt.Errorf("pipeline: warm-up: %w", err)
	}
	return nil
}
