package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/server/jobs"
)

// memoryTrimIdle is how long a worker's device stays idle before its
// allocator's cached memory goes back to the driver.
const memoryTrimIdle = 30 * time.Second

// trimIdle returns the device's cached memory after memoryTrimIdle without
// a batch. It runs on the worker's batch goroutine, the device's only user.
func (w *Worker) trimIdle() {
	if w.o.Memory == nil {
		return
	}
	if _, err := w.o.Memory.TrimIfIdle(memoryTrimIdle); err != nil {
		w.log.Warn("trimming idle device memory", "err", err)
	}
}

// underBudget returns the device memory a running batch may still fill:
// with a memory manager, the backend's free figure (the whole device's)
// is capped by the budget (--memory-budget) less what is in use, and the
// step's activation peak is recorded for the batch's shape, so that the
// batching policy's per-job estimates follow measurements.
func (w *Worker) underBudget(p jobs.Params, images int, free, peak int64) int64 {
	if w.o.Memory == nil {
		return free
	}
	if peak > 0 {
		_ = w.o.Memory.RecordPeak(memory.Batch{Model: p.Model, Images: images, Width: p.Width, Height: p.Height}, peak)
	}
	budget := w.o.Memory.FreeNow()
	if free <= 0 {
		return max(budget, 1) // 0 would read as unknown
	}
	return max(min(free, budget), 1)
}

// MemoryRun is what RunUnderMemory needs besides the batch.
type MemoryRun struct {
	// Manager is the device's memory manager; nil runs the batch as is.
	Manager *memory.Manager
	// Model names the model (the activation peaks' key).
	Model string
	// FreeOthers moves the other models off the device (the model cache's
	// Free); nil skips that recovery step.
	FreeOthers func(ctx context.Context) error
}

// part is a run of images of one item: images [from, from+n) of item.
type part struct{ item, from, n int }

// RunUnderMemory runs items through run (a model's GenerateBatch) so that
// no job fails for memory while anything can still be done: it books the
// batch's activation memory with the manager (measuring its peak), and
// when the device runs out of memory it splits the batch by images and
// retries the rest in smaller chunks, then frees the other models, and
// only then fails the remaining items with memory.ErrOutOfMemory. Images
// of one request split across chunks keep their seeds (image i uses seed
// + i), so the result is the one an unsplit run gives. The report says
// what recovery took place; the worker puts it in the job record.
func RunUnderMemory(ctx context.Context, m MemoryRun, items []BatchItem,
	run func(ctx context.Context, items []BatchItem, onProgress func(int, Progress)) []BatchResult,
	onProgress func(int, Progress)) ([]BatchResult, memory.Report) {
	out := make([]BatchResult, len(items))
	var images []part // one per image, in order
	w, h := 0, 0
	for i, it := range items {
		for k := range max(it.Request.N, 1) {
			images = append(images, part{item: i, from: k, n: 1})
		}
		w, h = max(w, it.Request.Width), max(h, it.Request.Height)
	}
	var rep memory.Report
	if m.Manager != nil {
		// A peak is recorded only for a batch that ran whole and succeeded.
		b := memory.Batch{Model: m.Model, Images: len(images), Width: w, Height: h}
		if r, err := m.Manager.Reserve(b, true); err == nil {
			defer func() { r.End(allDone(out) && !rep.Recovered()) }()
		}
	}
	failed := make([]bool, len(items))
	rep, err := memory.Split(ctx, len(images), func(ctx context.Context, lo, hi int) error {
		parts := merge(images[lo:hi], failed)
		if len(parts) == 0 {
			return nil
		}
		sub := make([]BatchItem, len(parts))
		for j, p := range parts {
			it := items[p.item]
			it.Request.N = p.n
			it.Request.Seed += uint64(p.from)
			sub[j] = it
		}
		res := run(ctx, sub, func(j int, pr Progress) {
			if onProgress != nil && j >= 0 && j < len(parts) {
				onProgress(parts[j].item, pr)
			}
		})
		if len(res) != len(sub) {
			return fmt.Errorf("engine returned %d results for a batch of %d", len(res), len(sub))
		}
		for _, r := range res {
			if r.Err != nil && errors.Is(r.Err, backend.ErrOutOfMemory) {
				return r.Err // nothing of this chunk is kept: it runs again smaller
			}
		}
		for j, r := range res {
			p := parts[j]
			o := &out[p.item]
			switch {
			case r.Err != nil:
				o.Err, o.Result, failed[p.item] = r.Err, nil, true
			case r.Result == nil:
				o.Err, o.Result, failed[p.item] = errors.New("engine returned no result"), nil, true
			default:
				if o.Result == nil {
					o.Result = &Result{}
				}
				o.Result.Images = append(o.Result.Images, r.Result.Images...)
				o.Result.Seeds = append(o.Result.Seeds, r.Result.Seeds...)
			}
		}
		return nil
	}, memory.Recovery{FreeOthers: m.FreeOthers})
	if m.Manager != nil {
		m.Manager.NoteRecovery(rep)
	}
	if err != nil {
		if errors.Is(err, memory.ErrOutOfMemory) && m.Manager != nil {
			m.Manager.NoteFailure()
		}
		for i := range out {
			if out[i].Err == nil && (out[i].Result == nil || len(out[i].Result.Images) < max(items[i].Request.N, 1)) {
				out[i] = BatchResult{Err: err}
			}
		}
	}
	return out, rep
}

// merge joins consecutive images of one item into parts, leaving out
// items that already failed.
func merge(images []part, failed []bool) []part {
	var out []part
	for _, p := range images {
		if failed[p.item] {
			continue
		}
		if n := len(out); n > 0 && out[n-1].item == p.item && out[n-1].from+out[n-1].n == p.from {
			out[n-1].n++
			continue
		}
		out = append(out, p)
	}
	return out
}

func allDone(out []BatchResult) bool {
	for _, r := range out {
		if r.Err != nil {
			return false
		}
	}
	return true
}
