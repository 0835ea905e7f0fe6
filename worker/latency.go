package worker

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/kiln-project/kiln/server/jobs"
)

// Bounds of the latency table: shapes remembered, and batch sizes per
// shape (the batching ABI carries at most 256).
const (
	maxLatencyShapes  = 64
	maxLatencyBatches = 256
	// latencyAlpha is the weight of a new measurement in the moving
	// average.
	latencyAlpha = 0.25
)

// latencyTable keeps the measured step latency per batch size for each
// (model, width, height), as an exponential moving average, so that the
// batching policy can judge whether a fuller batch pays.
type latencyTable struct {
	mu     sync.Mutex
	shapes map[string]*shapeLatency
	tick   uint64
}

type shapeLatency struct {
	used    uint64          // tick of the last observation, to forget unused shapes
	byBatch map[int]float64 // nanoseconds
}

func shapeKey(p *jobs.Params) string {
	return fmt.Sprintf("%s/%dx%d", p.Model, p.Width, p.Height)
}

// observe records one evaluation of images images that took d.
func (t *latencyTable) observe(shape string, images int, d time.Duration) {
	if images < 1 || d <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.shapes == nil {
		t.shapes = map[string]*shapeLatency{}
	}
	t.tick++
	s := t.shapes[shape]
	if s == nil {
		if len(t.shapes) >= maxLatencyShapes {
			var oldest string
			for k, v := range t.shapes {
				if oldest == "" || v.used < t.shapes[oldest].used {
					oldest = k
				}
			}
			delete(t.shapes, oldest)
		}
		s = &shapeLatency{byBatch: map[int]float64{}}
		t.shapes[shape] = s
	}
	s.used = t.tick
	v := float64(d)
	if old, ok := s.byBatch[images]; ok {
		s.byBatch[images] = old + latencyAlpha*(v-old)
	} else if len(s.byBatch) < maxLatencyBatches {
		s.byBatch[images] = v
	}
}

// snapshot returns the table of one shape, sorted by batch size.
func (t *latencyTable) snapshot(shape string) []StepLatency {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.shapes[shape]
	if s == nil {
		return nil
	}
	out := make([]StepLatency, 0, len(s.byBatch))
	for b, v := range s.byBatch {
		out = append(out, StepLatency{Images: b, Latency: time.Duration(v)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Images < out[j].Images })
	return out
}
