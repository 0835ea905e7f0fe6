// Package latency keeps recent job latencies per key (the adaptive quality
// policy's tenant, profile and model) over a sliding window: samples older
// than the window are dropped and the rest weigh less the older they are
// (exponential decay), so the quantiles follow the current load and a
// burst stops counting once the window has passed.
package latency

import (
	"math"
	"sort"
	"sync"
	"time"
)

// Windows holds one window per key. It is safe for concurrent use.
type Windows struct {
	span, halfLife time.Duration
	max            int
	now            func() time.Time

	mu   sync.Mutex
	keys map[string][]sample
}

type sample struct {
	at time.Time
	v  time.Duration
}

// New returns windows over span whose samples lose half their weight
// every halfLife, keeping at most max samples per key (the newest).
func New(span, halfLife time.Duration, max int, now func() time.Time) *Windows {
	if now == nil {
		now = time.Now
	}
	return &Windows{span: span, halfLife: halfLife, max: max, now: now, keys: map[string][]sample{}}
}

// Observe records a latency under key.
func (w *Windows) Observe(key string, v time.Duration) {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	s := append(w.prune(key, now), sample{now, v})
	if len(s) > w.max {
		s = s[len(s)-w.max:]
	}
	w.keys[key] = s
	if len(w.keys) > 4*w.max { // forget keys that went quiet
		for k := range w.keys {
			if len(w.prune(k, now)) == 0 {
				delete(w.keys, k)
			}
		}
	}
}

// prune drops a key's samples older than the window.
func (w *Windows) prune(key string, now time.Time) []sample {
	s := w.keys[key]
	i := sort.Search(len(s), func(i int) bool { return now.Sub(s[i].at) <= w.span })
	s = s[i:]
	if len(s) == 0 {
		delete(w.keys, key)
		return nil
	}
	w.keys[key] = s
	return s
}

// Quantiles returns the age-weighted quantiles qs (0..1) of key's
// latencies in the window, and how many samples there were; zeros when
// there were none.
func (w *Windows) Quantiles(key string, qs ...float64) ([]time.Duration, int) {
	now := w.now()
	w.mu.Lock()
	s := append([]sample(nil), w.prune(key, now)...)
	w.mu.Unlock()
	out := make([]time.Duration, len(qs))
	if len(s) == 0 {
		return out, 0
	}
	type wv struct {
		v time.Duration
		w float64
	}
	vals := make([]wv, len(s))
	total := 0.0
	for i, x := range s {
		vals[i] = wv{x.v, math.Exp2(-now.Sub(x.at).Seconds() / w.halfLife.Seconds())}
		total += vals[i].w
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i].v < vals[j].v })
	for k, q := range qs {
		acc, want := 0.0, q*total
		out[k] = vals[len(vals)-1].v
		for _, x := range vals {
			acc += x.w
			if acc >= want {
				out[k] = x.v
				break
			}
		}
	}
	return out, len(s)
}
