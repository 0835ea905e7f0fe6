package app_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/kiln-project/kiln/app"
	"github.com/kiln-project/kiln/server/config"
)

// benchServer starts a server for benchmarks with unbounded local quotas.
func benchServer(b *testing.B, mod func(*config.Config)) *server {
	cfg := testConfig(b)
	cfg.LocalQuota = config.Quota{ConcurrentJobs: 1 << 30, ImagesPerMinute: 1 << 30, MaxPixels: 1 << 22, MaxSteps: 150, MaxN: 8}
	if mod != nil {
		mod(cfg)
	}
	in, err := app.Start(b.Context(), app.Options{Config: cfg, NoWasm: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { in.Stop(b.Context()) })
	return &server{in: in, base: "http://" + in.Addr(), cfg: cfg}
}

func post(client *http.Client, url string, body []byte) (time.Duration, error) {
	start := time.Now()
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	return time.Since(start), nil
}

func percentile(d []time.Duration, p float64) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[min(len(d)-1, int(p*float64(len(d))))]
}

// BenchmarkSubmit measures how many POST /v1/jobs the gateway accepts per
// second and the latency percentiles of one submission, with 1 and with 8
// concurrent clients (jobs are only queued: gateway role, no worker).
func BenchmarkSubmit(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			s := benchServer(b, func(c *config.Config) { c.Role = config.RoleGateway })
			body, _ := json.Marshal(tinyJob("benchmark"))
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			lat := make([]time.Duration, b.N)
			var next sync.Mutex
			i := 0
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for c := 0; c < clients; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						next.Lock()
						k := i
						i++
						next.Unlock()
						if k >= b.N {
							return
						}
						d, err := post(client, s.base+"/v1/jobs", body)
						if err != nil {
							b.Error(err)
							return
						}
						lat[k] = d
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
			b.ReportMetric(float64(percentile(lat, 0.50).Microseconds()), "p50-µs")
			b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-µs")
		})
	}
}

func benchEndToEnd(b *testing.B, workers int) {
	s := benchServer(b, func(c *config.Config) { c.Workers = workers })
	job := tinyJob("end to end")
	job["steps"] = 4
	body, _ := json.Marshal(job)
	client := &http.Client{}
	// Warm the model caches of every worker.
	warm := make([]string, workers)
	for i := range warm {
		warm[i] = submitRaw(b, client, s.base, body)
	}
	for _, id := range warm {
		waitDone(b, client, s.base, id)
	}
	b.ResetTimer()
	start := time.Now()
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = submitRaw(b, client, s.base, body)
	}
	for _, id := range ids {
		waitDone(b, client, s.base, id)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
}

// BenchmarkEndToEnd1Worker and 2Workers measure finished jobs per second
// with the fixture model (64×64, 4 steps, CFG) on the CPU.
func BenchmarkEndToEnd1Worker(b *testing.B)  { benchEndToEnd(b, 1) }
func BenchmarkEndToEnd2Workers(b *testing.B) { benchEndToEnd(b, 2) }

func submitRaw(b *testing.B, client *http.Client, base string, body []byte) string {
	resp, err := client.Post(base+"/v1/jobs", "application/json", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	if resp.StatusCode != http.StatusAccepted {
		b.Fatalf("submit: %d %v", resp.StatusCode, m)
	}
	return m["id"].(string)
}

func waitDone(b *testing.B, client *http.Client, base, id string) {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		resp, err := client.Get(base + "/v1/jobs/" + id)
		if err != nil {
			b.Fatal(err)
		}
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		switch m["status"] {
		case "succeeded":
			return
		case "failed", "canceled":
			b.Fatalf("job %s: %v", id, m)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatalf("job %s not done", id)
}
