package latency

import (
	"testing"
	"time"
)

// TestWindowForgetsBursts: a burst of slow jobs dominates p95 while it is
// recent, weighs less as it ages, and is gone once the window has passed.
func TestWindowForgetsBursts(t *testing.T) {
	now := time.Unix(1000, 0)
	w := New(60*time.Second, 20*time.Second, 256, func() time.Time { return now })
	for i := 0; i < 20; i++ {
		w.Observe("acme", 30*time.Second)
	}
	if q, n := w.Quantiles("acme", 0.5, 0.95); n != 20 || q[1] != 30*time.Second {
		t.Fatalf("burst: %v %d", q, n)
	}
	if q, n := w.Quantiles("other", 0.95); n != 0 || q[0] != 0 {
		t.Fatalf("keys are separate: %v %d", q, n)
	}
	// 40 s later fast jobs arrive: the old burst weighs 1/4 each, so five
	// fast jobs already outweigh the twenty slow ones at the median.
	now = now.Add(40 * time.Second)
	for i := 0; i < 6; i++ {
		w.Observe("acme", time.Second)
	}
	if q, _ := w.Quantiles("acme", 0.5); q[0] != time.Second {
		t.Fatalf("median after decay %v", q[0])
	}
	// After the window, the burst is gone entirely.
	now = now.Add(21 * time.Second)
	if q, n := w.Quantiles("acme", 0.95); n != 6 || q[0] != time.Second {
		t.Fatalf("after the window: %v %d", q, n)
	}
	now = now.Add(time.Minute)
	if _, n := w.Quantiles("acme", 0.95); n != 0 {
		t.Fatalf("%d samples after an idle minute", n)
	}
}
