package sdengine

import (
	"context"

	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/cuda"
	"github.com/kiln-project/kiln/worker"
)

var _ worker.StepModel = (*Model)(nil)

// gpuBackend is a backend on a CUDA device: its memory can be measured,
// and it specialises work per shape (tuned kernels, captured graphs), so
// running batches use bucketed row counts there.
type gpuBackend interface {
	Device() *cuda.Device
}

// RowBucket rounds a UNet row count up to the buckets a GPU running batch
// uses: 1, 2, 4, 8, then multiples of 8. A batch whose jobs join and
// leave then meets a handful of shapes, each tuned and captured once,
// for at most a quarter of extra rows past 8.
func RowBucket(rows int) int {
	if rows <= 8 {
		b := 1
		for b < rows {
			b *= 2
		}
		return b
	}
	return (rows + 7) / 8 * 8
}

// CanStep reports whether the model runs running batches (a family with
// its own sampling loop runs through GenerateBatch).
func (m *Model) CanStep() bool { return m.p.Stepwise() }

// StartBatch implements worker.StepModel through the pipeline's running
// batch.
func (m *Model) StartBatch(ctx context.Context) worker.RunningBatch {
	r := m.p.NewRunning(ctx)
	rb := &running{r: r, m: m}
	if g, ok := m.be.(gpuBackend); ok {
		rb.dev = g.Device()
		r.SetRowBuckets(RowBucket)
	}
	return rb
}

// running adapts pipeline.Running to worker.RunningBatch.
type running struct {
	r          *pipeline.Running
	m          *Model
	dev        *cuda.Device
	free, peak int64 // measured at the last step
	rep        memory.Report
}

var _ worker.MemoryReporter = (*running)(nil)

// MemoryReport implements worker.MemoryReporter: the out-of-memory
// recovery of the batch's steps so far, and whether the model runs
// sequentially.
func (rb *running) MemoryReport() memory.Report {
	r := rb.rep
	r.Sequential = r.Sequential || rb.m.Sequential()
	return r
}

func (rb *running) Add(it worker.BatchItem, onProgress func(worker.Progress)) (int, error) {
	req := it.Request
	var cb func(pipeline.Progress)
	if onProgress != nil {
		cb = func(p pipeline.Progress) { onProgress(progress(p, max(req.N, 1))) }
	}
	pr, err := rb.m.request(req)
	if err != nil {
		return 0, err
	}
	return rb.r.Add(pipeline.BatchJob{Ctx: it.Ctx, Request: pr}, cb)
}

func (rb *running) Step() []worker.StepDone {
	var before int64
	if rb.dev != nil {
		before = rb.dev.Stats().InUse
		rb.dev.ResetPeak()
	}
	fin := rb.r.Step()
	if rep := rb.m.p.TakeMemoryReport(); rep.Recovered() {
		rb.rep.Add(rep)
	}
	if rb.dev != nil {
		s := rb.dev.Stats()
		rb.peak = max(s.Peak-before, 0)
		rb.free = max(rb.dev.Info().Memory-s.InUse, 0)
	}
	out := make([]worker.StepDone, len(fin))
	for i, f := range fin {
		out[i] = worker.StepDone{ID: f.ID, Decode: f.Decode, BatchResult: worker.BatchResult{Err: f.Result.Err}}
		if f.Result.Err == nil {
			out[i].Result = result(f.Result.Result)
		}
	}
	return out
}

func (rb *running) Len() int    { return rb.r.Len() }
func (rb *running) Images() int { return rb.r.Images() }

func (rb *running) Items() []worker.RunningItem {
	items := rb.r.Items()
	out := make([]worker.RunningItem, len(items))
	for i, it := range items {
		out[i] = worker.RunningItem{ID: it.ID, Images: it.Images, Remaining: it.Total - it.Done}
	}
	return out
}

func (rb *running) Memory() (free, peak int64) { return rb.free, rb.peak }
