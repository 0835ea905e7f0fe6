package sdengine

import (
	"context"
	"log/slog"
	"time"

	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/worker"
)

var _ worker.Idler = (*Engine)(nil)

// warmJob is one warm-up evaluation of a loaded model.
type warmJob struct {
	m      *Model
	images int
	decode bool
}

// WarmBatches are the image counts a GPU engine warms a model up at (with
// guidance, at the model's default size) after loading it: with the row
// buckets of running batches they cover every UNet shape a batch of up to
// 16 images meets.
var WarmBatches = []int{1, 2, 4, 8, 12, 16}

// UseTuningDir makes a GPU engine keep its device's measured kernel
// choices in dir: those stored for this GPU, driver and kernel image are
// loaded now; from now on shapes met for the first time run on a default
// and are measured in Idle, between jobs, and the choices are saved back
// once everything queued is measured. Models loaded later are warmed up
// at their common batch sizes in Idle too. It returns how many stored
// choices were loaded; on the CPU it does nothing.
func (e *Engine) UseTuningDir(dir string, log *slog.Logger) (int, error) {
	g, ok := e.be.(gpuBackend)
	if !ok {
		return 0, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dev, e.tuneDir, e.log = g.Device(), dir, log
	n, err := e.dev.LoadTuning(dir)
	e.dev.DeferTuning(true)
	return n, err
}

// warmUp readies a freshly loaded model on a GPU engine: two one-step
// jobs of one image at its default size now, as part of the load (text
// encoder, UNet, sampler and VAE meet their single-image shapes, and the
// repeated step is captured as a graph, so that the first request finds
// them ready), and the warm-up of its common batch sizes queued for Idle.
func (e *Engine) warmUp(ctx context.Context, m *Model) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dev == nil {
		return
	}
	for range 2 {
		if _, err := m.p.Generate(ctx, pipeline.Request{Steps: 1, Guidance: 7.5}, nil); err != nil {
			e.log.Warn("model warm-up failed", "err", err)
			break
		}
	}
	for i, n := range WarmBatches {
		e.warm = append(e.warm, warmJob{m: m, images: n, decode: i == 0})
	}
}

// Idle implements worker.Idler: one warm-up evaluation of a loaded model,
// or the measurement of one queued shape; when nothing is left, the
// choices measured since the last save are saved.
func (e *Engine) Idle(ctx context.Context) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dev == nil {
		return false
	}
	for len(e.warm) > 0 {
		wj := e.warm[0]
		e.warm = e.warm[1:]
		if wj.m.closed.Load() {
			continue
		}
		if err := wj.m.p.WarmUp(ctx, wj.images, true, wj.decode); err != nil {
			e.log.Warn("model warm-up failed", "images", wj.images, "err", err)
		}
		return true
	}
	if e.dev.TuneDeferred(1) > 0 {
		return true
	}
	if n := e.dev.TunedSinceSave(); n > 0 {
		start := time.Now()
		if err := e.dev.SaveTuning(e.tuneDir); err != nil {
			e.log.Warn("saving kernel tuning failed", "dir", e.tuneDir, "err", err)
		} else {
			e.log.Info("kernel tuning saved", "device", e.device, "shapes", n, "dir", e.tuneDir, "took", time.Since(start))
		}
	}
	return false
}
