package metrics

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestExposition(t *testing.T) {
	r := NewRegistry()
	c := r.NewCounterVec("kiln_requests_total", "Requests.", "route", "code")
	c.With("/v1/jobs", "202").Add(3)
	c.With("/v1/jobs", "400").Inc()
	g := r.NewGauge("kiln_queue_depth", "Queue depth.")
	g.Set(7)
	g.Add(-2)
	h := r.NewHistogram("kiln_latency_seconds", "Latency.", []float64{0.1, 1})
	h.Observe(0.05)
	h.Observe(0.5)
	h.Observe(5)
	r.Collect(func(emit func(name, help, typ string, labels, values []string, v float64)) {
		emit("kiln_cache_hit_ratio", "Ratio.", "gauge", []string{"cache"}, []string{`we"ird\`}, 0.25)
	})
	var buf bytes.Buffer
	if _, err := r.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	want := `# HELP kiln_cache_hit_ratio Ratio.
# TYPE kiln_cache_hit_ratio gauge
kiln_cache_hit_ratio{cache="we\"ird\\"} 0.25
# HELP kiln_latency_seconds Latency.
# TYPE kiln_latency_seconds histogram
kiln_latency_seconds_bucket{le="0.1"} 1
kiln_latency_seconds_bucket{le="1"} 2
kiln_latency_seconds_bucket{le="+Inf"} 3
kiln_latency_seconds_sum 5.55
kiln_latency_seconds_count 3
# HELP kiln_queue_depth Queue depth.
# TYPE kiln_queue_depth gauge
kiln_queue_depth 5
# HELP kiln_requests_total Requests.
# TYPE kiln_requests_total counter
kiln_requests_total{route="/v1/jobs",code="202"} 3
kiln_requests_total{route="/v1/jobs",code="400"} 1
`
	if buf.String() != want {
		t.Fatalf("exposition:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestQuantile(t *testing.T) {
	r := NewRegistry()
	h := r.NewHistogram("x", "x", []float64{1, 2, 3, 4})
	if !math.IsNaN(h.Quantile(0.5)) {
		t.Fatal("quantile of nothing")
	}
	for i := 0; i < 100; i++ {
		h.Observe(float64(i%4) + 0.5) // 25 in each bucket
	}
	if q := h.Quantile(0.5); q != 2 {
		t.Fatalf("p50 = %v, want 2", q)
	}
	if q := h.Quantile(0.99); math.Abs(q-3.96) > 1e-9 {
		t.Fatalf("p99 = %v, want 3.96", q)
	}
}

func TestRegistrationErrors(t *testing.T) {
	r := NewRegistry()
	r.NewCounter("a_total", "a")
	for name, fn := range map[string]func(){
		"duplicate": func() { r.NewCounter("a_total", "again") },
		"bad name":  func() { r.NewGauge("bad-name", "x") },
		"labels":    func() { r.NewCounterVec("b_total", "b", "l").With() },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			fn()
		}()
	}
	r.RegisterProcess()
	var buf bytes.Buffer
	r.WriteTo(&buf)
	if !strings.Contains(buf.String(), "go_goroutines ") {
		t.Fatal("process metrics missing")
	}
}
