// Command soak drives a running kiln serve with steady mixed load — job
// submissions and polling, listings, WebSocket subscribers that come and
// go, module uploads (valid and garbage) — for a set duration, samples the
// server's RSS, goroutines, open files and queue depth, and counts job
// outcomes. After the warm-up it compares the last quarter of the run
// with the first quarter after warm-up and fails on growth. It is run by
// scripts/soak.sh.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	nodeswasm "github.com/kiln-project/kiln/nodes-wasm"
)

type sample struct {
	at                   time.Duration
	rss, heap            int64
	goroutines, fds      int
	queue                int
	ok, failed, rejected int64
}

type load struct {
	base, key            string
	ok, failed, rejected atomic.Int64
	errors               atomic.Int64
}

func (l *load) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, l.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if l.key != "" {
		req.Header.Set("Authorization", "Bearer "+l.key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// jobs submits a small job every period and follows it to its end.
func (l *load) jobs(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		body, _ := json.Marshal(map[string]any{"prompt": fmt.Sprintf("soak %d", i), "width": 64, "height": 64, "steps": 2, "guidance": 5})
		code, b, err := l.do(ctx, "POST", "/v1/jobs", body)
		if err != nil {
			l.errors.Add(1)
			continue
		}
		if code != http.StatusAccepted {
			l.rejected.Add(1)
			continue
		}
		var j struct{ ID string }
		json.Unmarshal(b, &j)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, b, err := l.do(ctx, "GET", "/v1/jobs/"+j.ID, nil)
				var s struct{ Status string }
				if err == nil && json.Unmarshal(b, &s) == nil {
					switch s.Status {
					case "succeeded":
						l.ok.Add(1)
						return
					case "failed", "canceled":
						l.failed.Add(1)
						return
					}
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
}

// reads lists jobs, models and status in a loop.
func (l *load) reads(ctx context.Context) {
	for ctx.Err() == nil {
		for _, p := range []string{"/v1/jobs?limit=20", "/v1/models", "/v1/status", "/v1/account", "/metrics"} {
			if _, _, err := l.do(ctx, "GET", p, nil); err != nil && ctx.Err() == nil {
				l.errors.Add(1)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sockets keeps n WebSocket subscribers, each reconnecting after a while.
func (l *load) sockets(ctx context.Context, n int, life time.Duration) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, life)
				opts := &websocket.DialOptions{Subprotocols: []string{"kiln.v1"}}
				if l.key != "" {
					opts.Subprotocols = append(opts.Subprotocols, "kiln.bearer."+l.key)
				}
				c, _, err := websocket.Dial(cctx, strings.Replace(l.base, "http", "ws", 1)+"/v1/ws?subscribe=all", opts)
				if err != nil {
					cancel()
					if ctx.Err() == nil {
						l.errors.Add(1)
						time.Sleep(time.Second)
					}
					continue
				}
				c.SetReadLimit(1 << 24)
				for {
					if _, _, err := c.Read(cctx); err != nil {
						break
					}
				}
				c.CloseNow()
				cancel()
			}
		}()
	}
	wg.Wait()
}

// uploads stores a valid node module now and then and sends garbage often.
func (l *load) uploads(ctx context.Context, valid, garbage time.Duration) {
	if valid <= 0 {
		valid = 1 << 62 // never again
	}
	tv, tg := time.NewTicker(valid), time.NewTicker(garbage)
	defer tv.Stop()
	defer tg.Stop()
	// One at once, so that the warm-up includes loading a module.
	l.do(ctx, "PUT", "/v1/nodes/soak-first", nodeswasm.Builtin())
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tv.C:
			l.do(ctx, "PUT", fmt.Sprintf("/v1/nodes/soak-%d", i%3), nodeswasm.Builtin())
		case <-tg.C:
			l.do(ctx, "PUT", "/v1/nodes/soak-garbage", []byte("\x00asm\x01\x00\x00\x00garbage"))
		}
	}
}

func procStatus(pid int) (rss int64, fds int) {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			rss = kb << 10
		}
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return rss, len(ents)
}

func (l *load) sample(ctx context.Context, pid int, at time.Duration) sample {
	s := sample{at: at, ok: l.ok.Load(), failed: l.failed.Load(), rejected: l.rejected.Load()}
	s.rss, s.fds = procStatus(pid)
	if _, b, err := l.do(ctx, "GET", "/metrics", nil); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "go_memstats_heap_alloc_bytes "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				s.heap = int64(f)
			}
			if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				s.goroutines = int(f)
			}
		}
	}
	if _, b, err := l.do(ctx, "GET", "/v1/status", nil); err == nil {
		var st struct {
			QueueDepth int `json:"queue_depth"`
		}
		json.Unmarshal(b, &st)
		s.queue = st.QueueDepth
	}
	return s
}

func mean(ss []sample, f func(sample) float64) float64 {
	if len(ss) == 0 {
		return 0
	}
	t := 0.0
	for _, s := range ss {
		t += f(s)
	}
	return t / float64(len(ss))
}

func main() {
	base := flag.String("base", "http://127.0.0.1:8080", "server URL")
	key := flag.String("key", "", "API key (empty: keyless)")
	pid := flag.Int("pid", 0, "server process id (for RSS and open files)")
	duration := flag.Duration("duration", 30*time.Minute, "how long to run")
	warmup := flag.Duration("warmup", 0, "warm-up excluded from the growth check (default: a fifth of the duration)")
	every := flag.Duration("every", 10*time.Second, "sampling interval")
	jobPeriod := flag.Duration("job-period", 500*time.Millisecond, "one job submitted per period")
	sockets := flag.Int("sockets", 8, "WebSocket subscribers")
	uploadEvery := flag.Duration("upload-every", 45*time.Second, "interval of valid module uploads (each a new version; 0: one at the start only)")
	rssGrowth := flag.Float64("max-rss-growth", 0.25, "allowed RSS growth (fraction) after warm-up")
	grGrowth := flag.Float64("max-goroutine-growth", 0.25, "allowed goroutine growth (fraction) after warm-up")
	fdGrowth := flag.Int("max-fd-growth", 32, "allowed growth of open files after warm-up")
	flag.Parse()
	if *warmup == 0 {
		*warmup = *duration / 5
	}
	l := &load{base: strings.TrimRight(*base, "/"), key: *key}
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	var wg sync.WaitGroup
	for _, f := range []func(){
		func() { l.jobs(ctx, *jobPeriod) },
		func() { l.reads(ctx) },
		func() { l.sockets(ctx, *sockets, 20*time.Second) },
		func() { l.uploads(ctx, *uploadEvery, 5*time.Second) },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	start := time.Now()
	var samples []sample
	fmt.Printf("%8s %10s %10s %10s %6s %6s %8s %8s %8s\n", "t", "rss_MiB", "heap_MiB", "goroutines", "fds", "queue", "ok", "failed", "rejected")
	t := time.NewTicker(*every)
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-t.C:
		}
		s := l.sample(context.Background(), *pid, time.Since(start))
		samples = append(samples, s)
		fmt.Printf("%8s %10.1f %10.1f %10d %6d %6d %8d %8d %8d\n", s.at.Round(time.Second), float64(s.rss)/(1<<20), float64(s.heap)/(1<<20), s.goroutines, s.fds, s.queue, s.ok, s.failed, s.rejected)
	}
	t.Stop()
	wg.Wait()
	var after []sample
	for _, s := range samples {
		if s.at >= *warmup {
			after = append(after, s)
		}
	}
	if len(after) < 4 {
		fmt.Println("soak: too few samples after the warm-up to judge growth")
		os.Exit(1)
	}
	q := len(after) / 4
	first, last := after[:q], after[len(after)-q:]
	rss0, rss1 := mean(first, func(s sample) float64 { return float64(s.rss) }), mean(last, func(s sample) float64 { return float64(s.rss) })
	g0, g1 := mean(first, func(s sample) float64 { return float64(s.goroutines) }), mean(last, func(s sample) float64 { return float64(s.goroutines) })
	f0, f1 := mean(first, func(s sample) float64 { return float64(s.fds) }), mean(last, func(s sample) float64 { return float64(s.fds) })
	fmt.Printf("soak: %v; jobs ok %d, failed %d, rejected %d, client errors %d\n", *duration, l.ok.Load(), l.failed.Load(), l.rejected.Load(), l.errors.Load())
	fmt.Printf("soak: after warm-up, first vs last quarter: RSS %.1f → %.1f MiB, goroutines %.0f → %.0f, open files %.0f → %.0f\n",
		rss0/(1<<20), rss1/(1<<20), g0, g1, f0, f1)
	bad := false
	if rss1 > rss0*(1+*rssGrowth) && rss1-rss0 > 32<<20 {
		fmt.Println("soak: FAIL: RSS grew")
		bad = true
	}
	if g1 > g0*(1+*grGrowth) && g1-g0 > 20 {
		fmt.Println("soak: FAIL: goroutines grew")
		bad = true
	}
	if f1-f0 > float64(*fdGrowth) {
		fmt.Println("soak: FAIL: open files grew")
		bad = true
	}
	if l.failed.Load() > 0 {
		fmt.Println("soak: FAIL: jobs failed")
		bad = true
	}
	if bad {
		os.Exit(1)
	}
	fmt.Println("soak: passed")
}
