package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeServer accepts jobs and finishes each on its second read, with
// record timestamps 100 ms (queue) and 300 ms (finish) after creation; the
// job whose prompt is "fail" fails.
func fakeServer(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var mu sync.Mutex
	reads := map[string]int{}
	failing := map[string]bool{}
	var posted atomic.Int32
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/jobs":
			var body map[string]any
			_ = json.NewDecoder(r.Body).Decode(&body)
			id := fmt.Sprintf("j%d", posted.Add(1))
			failing[id] = body["prompt"] == "fail"
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprintf(w, `{"id":%q,"status":"queued","created_at":%q}`, id, created.Format(time.RFC3339Nano))
		case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/jobs/"):
			id := strings.TrimPrefix(r.URL.Path, "/v1/jobs/")
			reads[id]++
			switch {
			case reads[id] < 2:
				fmt.Fprintf(w, `{"id":%q,"status":"running","created_at":%q}`, id, created.Format(time.RFC3339Nano))
			case failing[id]:
				fmt.Fprintf(w, `{"id":%q,"status":"failed","created_at":%q,"error":{"code":"engine_error","message":"boom"}}`, id, created.Format(time.RFC3339Nano))
			default:
				fmt.Fprintf(w, `{"id":%q,"status":"succeeded","created_at":%q,"started_at":%q,"finished_at":%q,"images":[{"id":"a"},{"id":"b"}]}`,
					id, created.Format(time.RFC3339Nano), created.Add(100*time.Millisecond).Format(time.RFC3339Nano), created.Add(300*time.Millisecond).Format(time.RFC3339Nano))
			}
		case r.URL.Path == "/metrics":
			fmt.Fprint(w, "# TYPE kiln_stage_seconds histogram\nkiln_stage_seconds_sum{stage=\"step\"} 2.5\nkiln_stage_seconds_count{stage=\"step\"} 10\nkiln_worker_generate_seconds_total 7.25\n")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &posted
}

func TestRunSummarisesJobs(t *testing.T) {
	srv, posted := fakeServer(t)
	o := Options{URL: srv.URL, Concurrency: 3, Duration: time.Hour, JobsPerClient: 2, Poll: time.Millisecond, Job: map[string]any{"prompt": "x"}}
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Jobs != 6 || r.Images != 12 || r.Failed != 0 || posted.Load() != 6 {
		t.Fatalf("result %+v, %d posted", r, posted.Load())
	}
	if r.LatencyP50 != 0.3 || r.LatencyP99 != 0.3 || r.QueueWaitP50 != 0.1 || r.ImagesPerSec <= 0 {
		t.Fatalf("latency and queue wait from the records: %+v", r)
	}
	o.Job = map[string]any{"prompt": "fail"}
	o.Concurrency, o.JobsPerClient = 1, 1
	if r, err = Run(context.Background(), o); err != nil || r.Failed != 1 || !strings.Contains(r.FirstError, "boom") {
		t.Fatalf("failed job: %+v %v", r, err)
	}
	if _, err := Run(context.Background(), Options{URL: srv.URL}); err == nil {
		t.Fatal("no concurrency accepted")
	}
	text, err := Get(context.Background(), o, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if st := Stages(text); st["step"] != [2]float64{10, 2.5} {
		t.Fatalf("stages %v", st)
	}
	if v, ok := Metric(text, "kiln_worker_generate_seconds_total"); !ok || v != 7.25 {
		t.Fatalf("metric %v %v", v, ok)
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	if Percentile(xs, 50) != 3 || Percentile(xs, 100) != 5 || Percentile(xs, 1) != 1 || Percentile(nil, 50) != 0 {
		t.Fatal("percentiles")
	}
}
