package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kiln-project/kiln/app"
	"github.com/kiln-project/kiln/bench"
	"github.com/kiln-project/kiln/cuda"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/gpu"
	"github.com/kiln-project/kiln/server/loadtest"
)

// serveBench is the configuration of `kiln bench --serve`.
type serveBench struct {
	url         string
	key         string
	model       string
	device      string
	size        int
	steps       int
	guidance    float64
	sampler     string
	concurrency []int
	duration    time.Duration
	engine      []int // engine batch sizes measured for the ratio (in-process only)
	trace       bool
	output      string
	tuningDir   string // stored GPU kernel choices, shared by the engine run and the server
	o           bench.Options
}

// ServeReport is what `kiln bench --serve` writes as JSON.
type ServeReport struct {
	Date   string `json:"date"`
	Model  string `json:"model"`
	Device string `json:"device,omitempty"`
	GPU    string `json:"gpu,omitempty"`
	Size   int    `json:"size"`
	Steps  int    `json:"steps"`
	// Engine is `kiln bench` on the same device in the same run, and
	// EngineBest its best images per second.
	Engine     []bench.Result `json:"engine,omitempty"`
	EngineBest float64        `json:"engine_best_images_per_sec,omitempty"`
	// EngineGPUBusy is NVML's mean utilisation during the engine run.
	EngineGPUBusy *float64 `json:"engine_gpu_busy,omitempty"`
	// FirstJob is the latency of the first job after the server started
	// (model load included), ModelLoad the load alone, WarmJob a job
	// right after it.
	FirstJob  float64 `json:"first_job_seconds,omitempty"`
	ModelLoad float64 `json:"model_load_seconds,omitempty"`
	WarmJob   float64 `json:"warm_job_seconds,omitempty"`
	// IdleWork is the time the server spent warming up and tuning between
	// jobs before the levels ran (the benchmark waits for it to end).
	IdleWork float64      `json:"idle_work_seconds"`
	Levels   []ServeLevel `json:"levels"`
}

// ServeLevel is one concurrency level.
type ServeLevel struct {
	loadtest.Result
	// GPUBusy is NVML's mean utilisation during the level (0..1; absent
	// without NVML); WorkerBusy the fraction of wall time workers spent
	// in running batches.
	GPUBusy    *float64 `json:"gpu_busy,omitempty"`
	WorkerBusy float64  `json:"worker_busy"`
	// RatioToEngine is served images per second over EngineBest;
	// RatioSameBatch over the engine at a batch of as many images as
	// there are clients (when that batch size was measured).
	RatioToEngine  float64 `json:"ratio_to_engine,omitempty"`
	RatioSameBatch float64 `json:"ratio_to_engine_same_batch,omitempty"`
	// Stages are the mean seconds and counts of each served stage
	// (kiln_stage_seconds) during the level, with --trace.
	Stages map[string]StageStat `json:"stages,omitempty"`
}

// StageStat is one stage's count and mean during a level.
type StageStat struct {
	Count int     `json:"count"`
	Mean  float64 `json:"mean_seconds"`
}

// runServeBench implements `kiln bench --serve`.
func runServeBench(ctx context.Context, sb serveBench, stdout, stderr io.Writer) error {
	rep := &ServeReport{Date: time.Now().UTC().Format(time.RFC3339), Model: sb.model, Size: sb.size, Steps: sb.steps}
	url := sb.url
	if url == "" {
		// The engine's own throughput first, on the same device, then the
		// server (the two would otherwise share the GPU).
		if len(sb.engine) > 0 {
			sel, err := cuda.Select(sb.device)
			if err != nil {
				return err
			}
			o := sb.o
			o.Models, o.Batches, o.Components = []string{sb.model}, sb.engine, false
			if sel.Device != nil && sb.tuningDir != "" {
				if _, err := sel.Device.LoadTuning(sb.tuningDir); err != nil {
					fmt.Fprintf(stderr, "stored kernel tuning not used: %v\n", err)
				}
			}
			emon := gpu.Open()
			stopSampling, util := sampleGPU(emon)
			er, err := bench.Run(ctx, sel, o, nil)
			stopSampling()
			if u, ok := util(); ok {
				rep.EngineGPUBusy = &u
			}
			emon.Close()
			if sel.Device != nil && sb.tuningDir != "" {
				if err := sel.Device.SaveTuning(sb.tuningDir); err != nil {
					fmt.Fprintf(stderr, "saving kernel tuning: %v\n", err)
				}
			}
			sel.Close()
			if err != nil {
				return fmt.Errorf("engine benchmark: %w", err)
			}
			rep.Engine, rep.GPU, rep.Device = er.Results, er.GPU, er.Device
			for _, r := range er.Results {
				rep.EngineBest = max(rep.EngineBest, r.ImagesPerSecond)
				fmt.Fprintf(stdout, "engine  batch %-3d  %.2f img/s  e2e p50 %.0f ms\n", r.Batch, r.ImagesPerSecond, r.EndToEnd.P50)
			}
			if rep.EngineGPUBusy != nil {
				fmt.Fprintf(stdout, "engine  GPU busy %.0f%% (NVML, over the whole engine run)\n", *rep.EngineGPUBusy*100)
			}
		}
		in, addr, dir, err := startBenchServer(ctx, sb, stderr)
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir) // after the server stops (deferred calls run last first)
		defer in.Stop(context.Background())
		url = "http://" + addr
	}
	job := map[string]any{"prompt": "a photograph of a lighthouse at dusk, detailed", "negative_prompt": "blurry",
		"steps": sb.steps, "guidance": sb.guidance, "sampler": sb.sampler, "n": 1}
	if sb.size > 0 {
		job["width"], job["height"] = sb.size, sb.size
	}
	if sb.url == "" {
		job["model"] = "bench"
	} else if sb.model != "" && !strings.HasPrefix(sb.model, "synthetic:") {
		job["model"] = sb.model
	}
	lo := loadtest.Options{URL: url, Key: sb.key, Job: job}
	// First job after start (the model loads), then a warm one.
	for i, dst := range []*float64{&rep.FirstJob, &rep.WarmJob} {
		one := lo
		one.Concurrency, one.Duration, one.JobsPerClient = 1, time.Hour, 1
		r, err := loadtest.Run(ctx, one)
		if err != nil {
			return err
		}
		if r.Failed > 0 {
			return fmt.Errorf("probe job %d failed: %s", i+1, r.FirstError)
		}
		*dst = r.LatencyP50
	}
	if text, err := loadtest.Get(ctx, lo, "/metrics"); err == nil {
		if v, ok := loadtest.Metric(text, "kiln_model_load_seconds_sum"); ok {
			rep.ModelLoad = v
		}
	}
	fmt.Fprintf(stdout, "first job %.3f s (model load %.3f s), warm job %.3f s\n", rep.FirstJob, rep.ModelLoad, rep.WarmJob)
	// Let the server finish what it does between jobs after a model load
	// (warm-up and kernel tuning) before measuring load, as a server that
	// has been up a while would have.
	settled := time.Now()
	last := -1.0
	for time.Since(settled) < 2*time.Minute {
		text, err := loadtest.Get(ctx, lo, "/metrics")
		if err != nil {
			break
		}
		v, _ := loadtest.Metric(text, "kiln_worker_idle_work_seconds_total")
		if v == last {
			break
		}
		last = v
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	rep.IdleWork = last
	fmt.Fprintf(stdout, "server warm-up and tuning between jobs: %.1f s\n", max(last, 0))
	mon := gpu.Open()
	defer mon.Close()
	for _, c := range sb.concurrency {
		lo.Concurrency, lo.Duration = c, sb.duration
		before, _ := loadtest.Get(ctx, lo, "/metrics")
		stopSampling, util := sampleGPU(mon)
		r, err := loadtest.Run(ctx, lo)
		stopSampling()
		if err != nil {
			return err
		}
		after, _ := loadtest.Get(ctx, lo, "/metrics")
		lv := ServeLevel{Result: r}
		if u, ok := util(); ok {
			lv.GPUBusy = &u
		}
		g0, _ := loadtest.Metric(before, "kiln_worker_generate_seconds_total")
		g1, _ := loadtest.Metric(after, "kiln_worker_generate_seconds_total")
		if r.Seconds > 0 {
			lv.WorkerBusy = (g1 - g0) / r.Seconds
		}
		if rep.EngineBest > 0 {
			lv.RatioToEngine = r.ImagesPerSec / rep.EngineBest
		}
		for _, e := range rep.Engine {
			if e.Batch == c && e.ImagesPerSecond > 0 {
				lv.RatioSameBatch = r.ImagesPerSec / e.ImagesPerSecond
			}
		}
		if sb.trace {
			lv.Stages = stageDelta(loadtest.Stages(before), loadtest.Stages(after))
		}
		rep.Levels = append(rep.Levels, lv)
		printLevel(stdout, lv)
	}
	if sb.output != "" {
		data, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(sb.output, append(data, '\n'), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", sb.output, err)
		}
	}
	return nil
}

// startBenchServer starts an in-process server on a loopback port with the
// benchmarked model as "bench", the keyless tenant's quota raised, and
// its data in a temporary folder.
func startBenchServer(ctx context.Context, sb serveBench, stderr io.Writer) (*app.Instance, string, string, error) {
	cfg, err := config.Default()
	if err != nil {
		return nil, "", "", err
	}
	dir, err := os.MkdirTemp("", "kiln-bench-serve-")
	if err != nil {
		return nil, "", "", err
	}
	if sb.tuningDir != "" {
		// the server keeps its kernel choices under <data-dir>/tuning
		if err := os.MkdirAll(sb.tuningDir, 0o755); err == nil {
			_ = os.Symlink(sb.tuningDir, filepath.Join(dir, "tuning"))
		}
	}
	most := 1
	for _, c := range sb.concurrency {
		most = max(most, c)
	}
	cfg.Listen, cfg.DataDir, cfg.Device = "127.0.0.1:0", dir, sb.device
	cfg.Models = map[string]string{"bench": sb.model}
	cfg.SyntheticModels = strings.HasPrefix(sb.model, "synthetic:")
	cfg.BuiltinModel, cfg.DefaultModel = false, "bench"
	cfg.LocalQuota.ConcurrentJobs = max(cfg.LocalQuota.ConcurrentJobs, 2*most)
	cfg.LocalQuota.ImagesPerMinute = 1 << 30
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	in, err := app.Start(ctx, app.Options{Config: cfg, Logger: log})
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", "", fmt.Errorf("starting the server: %w", err)
	}
	return in, in.Addr(), dir, nil
}

// sampleGPU samples NVML's utilisation every 100 ms until stopped; util
// returns the mean (ok false without NVML readings).
func sampleGPU(mon *gpu.Monitor) (stop func(), util func() (float64, bool)) {
	var mu sync.Mutex
	var sum float64
	var n int
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if gs := mon.Read(); len(gs) > 0 {
					mu.Lock()
					sum += gs[0].Utilization
					n++
					mu.Unlock()
				}
			}
		}
	}()
	stop = func() {
		close(done)
		wg.Wait()
	}
	util = func() (float64, bool) {
		mu.Lock()
		defer mu.Unlock()
		if n == 0 {
			return 0, false
		}
		return sum / float64(n), true
	}
	return stop, util
}

// stageDelta is each stage's count and mean between two readings.
func stageDelta(before, after map[string][2]float64) map[string]StageStat {
	out := map[string]StageStat{}
	for s, a := range after {
		b := before[s]
		if n := a[0] - b[0]; n > 0 {
			out[s] = StageStat{Count: int(n), Mean: (a[1] - b[1]) / n}
		}
	}
	return out
}

func printLevel(w io.Writer, lv ServeLevel) {
	busy := "n/a"
	if lv.GPUBusy != nil {
		busy = fmt.Sprintf("%.0f%%", *lv.GPUBusy*100)
	}
	fmt.Fprintf(w, "serve  c=%-3d  %.2f img/s  p50 %.3f  p95 %.3f  p99 %.3f s  queue p50 %.3f s  GPU busy %s  worker busy %.0f%%",
		lv.Concurrency, lv.ImagesPerSec, lv.LatencyP50, lv.LatencyP95, lv.LatencyP99, lv.QueueWaitP50, busy, lv.WorkerBusy*100)
	if lv.RatioToEngine > 0 {
		fmt.Fprintf(w, "  ratio %.2f", lv.RatioToEngine)
	}
	if lv.RatioSameBatch > 0 {
		fmt.Fprintf(w, " (%.2f of the engine at batch %d)", lv.RatioSameBatch, lv.Concurrency)
	}
	if lv.Failed > 0 {
		fmt.Fprintf(w, "  %d failed (%s)", lv.Failed, lv.FirstError)
	}
	fmt.Fprintln(w)
	if len(lv.Stages) > 0 {
		names := make([]string, 0, len(lv.Stages))
		for s := range lv.Stages {
			names = append(names, s)
		}
		sort.Strings(names)
		for _, s := range names {
			st := lv.Stages[s]
			fmt.Fprintf(w, "    %-11s %7d × %8.2f ms\n", s, st.Count, st.Mean*1e3)
		}
	}
}

// parseInts parses a comma-separated list of positive integers.
func parseInts(flag, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var n int
		if _, err := fmt.Sscanf(f, "%d", &n); err != nil || n < 1 || fmt.Sprint(n) != f {
			return nil, usageError{fmt.Errorf("--%s: %q is not a positive number", flag, f)}
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, usageError{errors.New("--" + flag + ": give at least one number")}
	}
	return out, nil
}
