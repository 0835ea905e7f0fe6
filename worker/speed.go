package worker

import (
	"sync"
	"time"
)

// speedAlpha is the weight of a new step in the speed average.
const speedAlpha = 0.2

// speedTable keeps each model's measured sampling speed in megapixel-steps
// per second (an exponential moving average over model evaluations), which
// heartbeats report for the gateway's cost guard.
type speedTable struct {
	mu sync.Mutex
	m  map[string]float64
}

// observe records one evaluation of megapixels (images × pixels / 1e6)
// of a model that took d.
func (t *speedTable) observe(model string, megapixels float64, d time.Duration) {
	if megapixels <= 0 || d <= 0 {
		return
	}
	v := megapixels / d.Seconds()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]float64{}
	}
	if old, ok := t.m[model]; ok {
		v = old + speedAlpha*(v-old)
	}
	t.m[model] = v
}

// snapshot returns a copy of the speeds (nil when none is measured).
func (t *speedTable) snapshot() map[string]float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) == 0 {
		return nil
	}
	out := make(map[string]float64, len(t.m))
	for k, v := range t.m {
		out[k] = v
	}
	return out
}
