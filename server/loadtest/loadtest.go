// Package loadtest drives a Kiln server over its HTTP API with a fixed
// number of concurrent clients, each submitting a job and waiting for it
// before the next, and summarises served throughput, latency and queue
// wait from the job records' own timestamps (`kiln bench --serve`).
package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Options configure one load level.
type Options struct {
	// URL is the server's base URL (http://host:port).
	URL string
	// Key is the tenant API key ("" for the keyless local tenant).
	Key string
	// Concurrency is the number of clients.
	Concurrency int
	// Duration is how long clients submit new jobs; jobs started before it
	// ends are waited for.
	Duration time.Duration
	// Job is the POST /v1/jobs body every client submits.
	Job map[string]any
	// JobsPerClient, when positive, ends each client after that many jobs
	// (a probe: one client, one job).
	JobsPerClient int
	// Poll is the interval at which a client reads its job (10 ms).
	Poll time.Duration
	// Client is the HTTP client (nil: a default one).
	Client *http.Client
}

// Result summarises one load level. Times are seconds.
type Result struct {
	Concurrency  int     `json:"concurrency"`
	Jobs         int     `json:"jobs"`
	Images       int     `json:"images"`
	Failed       int     `json:"failed"`
	Seconds      float64 `json:"seconds"`
	ImagesPerSec float64 `json:"images_per_sec"`
	LatencyP50   float64 `json:"latency_p50"`
	LatencyP95   float64 `json:"latency_p95"`
	LatencyP99   float64 `json:"latency_p99"`
	QueueWaitP50 float64 `json:"queue_wait_p50"`
	QueueWaitP95 float64 `json:"queue_wait_p95"`
	// FirstError is the first failure's message, if any.
	FirstError string `json:"first_error,omitempty"`
}

// job is the part of the job object the load test reads.
type job struct {
	ID         string     `json:"id"`
	Status     string     `json:"status"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	Images     []struct {
		ID string `json:"id"`
	} `json:"images"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// sample is one finished job.
type sample struct {
	latency, wait float64
	images        int
	err           error
}

// Run drives one load level and summarises it.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Concurrency < 1 || o.Duration <= 0 || o.URL == "" {
		return Result{}, errors.New("loadtest: need a URL, concurrency ≥ 1 and a positive duration")
	}
	if o.Poll <= 0 {
		o.Poll = 10 * time.Millisecond
	}
	if o.Client == nil {
		o.Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.Concurrency * 2}}
	}
	body, err := json.Marshal(o.Job)
	if err != nil {
		return Result{}, fmt.Errorf("loadtest: job: %w", err)
	}
	start := time.Now()
	deadline := start.Add(o.Duration)
	var mu sync.Mutex
	var samples []sample
	var wg sync.WaitGroup
	for c := 0; c < o.Concurrency; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; time.Now().Before(deadline) && ctx.Err() == nil; k++ {
				if o.JobsPerClient > 0 && k == o.JobsPerClient {
					return
				}
				s := runOne(ctx, o, body)
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
				if s.err != nil && ctx.Err() != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	return summarise(o.Concurrency, time.Since(start), samples), nil
}

// summarise turns samples into a Result.
func summarise(conc int, took time.Duration, samples []sample) Result {
	r := Result{Concurrency: conc, Seconds: took.Seconds()}
	var lat, wait []float64
	for _, s := range samples {
		r.Jobs++
		if s.err != nil {
			r.Failed++
			if r.FirstError == "" {
				r.FirstError = s.err.Error()
			}
			continue
		}
		r.Images += s.images
		lat = append(lat, s.latency)
		wait = append(wait, s.wait)
	}
	if r.Seconds > 0 {
		r.ImagesPerSec = float64(r.Images) / r.Seconds
	}
	r.LatencyP50, r.LatencyP95, r.LatencyP99 = Percentile(lat, 50), Percentile(lat, 95), Percentile(lat, 99)
	r.QueueWaitP50, r.QueueWaitP95 = Percentile(wait, 50), Percentile(wait, 95)
	return r
}

// Percentile is the p-th percentile of xs (nearest rank; 0 when empty).
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	k := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(k, 0), len(s)-1)]
}

// runOne submits one job and waits for its end.
func runOne(ctx context.Context, o Options, body []byte) sample {
	var j job
	if err := call(ctx, o, http.MethodPost, "/v1/jobs", body, &j); err != nil {
		return sample{err: err}
	}
	for {
		switch j.Status {
		case "succeeded":
			if j.FinishedAt == nil {
				return sample{err: fmt.Errorf("job %s succeeded without finished_at", j.ID)}
			}
			s := sample{latency: j.FinishedAt.Sub(j.CreatedAt).Seconds(), images: len(j.Images)}
			if j.StartedAt != nil {
				s.wait = j.StartedAt.Sub(j.CreatedAt).Seconds()
			}
			return s
		case "failed", "canceled":
			msg := j.Status
			if j.Error != nil {
				msg += ": " + j.Error.Code + ": " + j.Error.Message
			}
			return sample{err: fmt.Errorf("job %s %s", j.ID, msg)}
		}
		select {
		case <-ctx.Done():
			return sample{err: ctx.Err()}
		case <-time.After(o.Poll):
		}
		if err := call(ctx, o, http.MethodGet, "/v1/jobs/"+j.ID, nil, &j); err != nil {
			return sample{err: err}
		}
	}
}

// call makes one API request and decodes its JSON answer into out.
func call(ctx context.Context, o Options, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(o.URL, "/")+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if o.Key != "" {
		req.Header.Set("Authorization", "Bearer "+o.Key)
	}
	resp, err := o.Client.Do(req)
	if err != nil {
		return fmt.Errorf("loadtest: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("loadtest: %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("loadtest: %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("loadtest: %s %s: %w", method, path, err)
	}
	return nil
}

// Stages reads the kiln_stage_seconds histograms from a Prometheus text
// exposition: per stage, the count and the sum of seconds.
func Stages(metricsText string) map[string][2]float64 {
	out := map[string][2]float64{}
	for _, line := range strings.Split(metricsText, "\n") {
		var kind string
		switch {
		case strings.HasPrefix(line, "kiln_stage_seconds_sum{"):
			kind = "sum"
		case strings.HasPrefix(line, "kiln_stage_seconds_count{"):
			kind = "count"
		default:
			continue
		}
		_, rest, _ := strings.Cut(line, `stage="`)
		stage, rest, ok := strings.Cut(rest, `"`)
		if !ok {
			continue
		}
		_, val, _ := strings.Cut(rest, "} ")
		var v float64
		if _, err := fmt.Sscanf(strings.TrimSpace(val), "%g", &v); err != nil {
			continue
		}
		e := out[stage]
		if kind == "count" {
			e[0] = v
		} else {
			e[1] = v
		}
		out[stage] = e
	}
	return out
}

// Metric reads one unlabelled sample (a counter or gauge) from a
// Prometheus text exposition; ok is false when it is absent.
func Metric(metricsText, name string) (float64, bool) {
	for _, line := range strings.Split(metricsText, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%g", &f); err == nil {
				return f, true
			}
		}
	}
	return 0, false
}

// Get fetches a path of the server as text (for /metrics).
func Get(ctx context.Context, o Options, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(o.URL, "/")+path, nil)
	if err != nil {
		return "", err
	}
	if o.Key != "" {
		req.Header.Set("Authorization", "Bearer "+o.Key)
	}
	c := o.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("loadtest: GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return "", fmt.Errorf("loadtest: GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("loadtest: GET %s: %s", path, resp.Status)
	}
	return string(data), nil
}
