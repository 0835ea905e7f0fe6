package app_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-project/kiln/app"
	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/worker"
	"github.com/kiln-project/kiln/worker/textcache"
)

// logBuffer collects a server's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the log lines whose message is msg.
func (l *logBuffer) lines(msg string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\n") {
		if strings.Contains(line, "msg="+msg+" ") || strings.Contains(line, `msg="`+msg+`"`) {
			out = append(out, line)
		}
	}
	return out
}

// startWith starts a server from the default configuration with options.
func startWith(t *testing.T, mod func(*config.Config), o app.Options) (*server, *logBuffer) {
	t.Helper()
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsInterval = config.Duration(200 * time.Millisecond)
	if mod != nil {
		mod(cfg)
	}
	logs := &logBuffer{}
	o.Config = cfg
	o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	in, err := app.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Stop(context.Background()) })
	return &server{t: t, in: in, base: "http://" + in.Addr(), cfg: cfg}, logs
}

// workerDevices waits until /v1/status lists n workers and returns their
// devices, sorted.
func (s *server) workerDevices(n int) []string {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := s.do("GET", "/v1/status", "", nil).json(s.t)
		ws, _ := st["workers"].([]any)
		if len(ws) == n {
			var out []string
			for _, w := range ws {
				out = append(out, w.(map[string]any)["device"].(string))
			}
			for i := 1; i < len(out); i++ {
				for j := i; j > 0 && out[j] < out[j-1]; j-- {
					out[j], out[j-1] = out[j-1], out[j]
				}
			}
			return out
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("workers %v, want %d", st["workers"], n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDeviceAutoWithoutGPU: where no GPU can be used (this machine, CI),
// `--device auto` runs one CPU worker and says so, with the reason, in one
// log line; `--device cuda:0` refuses to start with the reason.
func TestDeviceAutoWithoutGPU(t *testing.T) {
	if n, err := cuda.DeviceCount(); err == nil && n > 0 {
		t.Skip("a GPU is present: TestGPUWorkersOnePerDevice covers the GPU path")
	}
	s, logs := startWith(t, nil, app.Options{})
	if d := s.workerDevices(1); d[0] != "cpu" {
		t.Fatalf("worker devices %v", d)
	}
	lines := logs.lines("compute devices")
	if len(lines) != 1 || !strings.Contains(lines[0], "devices=[cpu]") || !strings.Contains(lines[0], `reason="device cpu: `) {
		t.Fatalf("device log lines %q", lines)
	}
	id := s.submit("", map[string]any{"prompt": "a red circle", "steps": 2})
	if j := s.waitJob("", id, "succeeded", "failed"); j["status"] != "succeeded" {
		t.Fatalf("job %v", j)
	}

	cfg, _ := config.Default()
	cfg.DataDir, cfg.Listen, cfg.Device, cfg.BuiltinModel = t.TempDir(), "127.0.0.1:0", "cuda:0", false
	_, err := app.Start(context.Background(), app.Options{Config: cfg, Logger: logger(t)})
	if err == nil || !errors.Is(err, cuda.ErrNoGPU) || !strings.Contains(err.Error(), "device cuda:0") {
		t.Fatalf("--device cuda:0 without a GPU: %v", err)
	}
}

// countingBackend counts weight uploads on a backend.
type countingBackend struct {
	backend.Backend
	uploads atomic.Int64
}

func (b *countingBackend) Upload(shape tensor.Shape, dt tensor.DType, raw []byte) *tensor.Tensor {
	b.uploads.Add(1)
	return b.Backend.Upload(shape, dt, raw)
}

// TestGPUWorkersOnePerDevice runs the GPU path with two stand-in GPUs (the
// CPU backend under CUDA device names, as no CUDA device can be emulated
// outside package cuda): one worker per device whatever `workers` says,
// each with its own engine on its device's backend, the hardware profile
// and memory budget of its GPU, jobs running on those backends, and the
// devices released at shutdown.
func TestGPUWorkersOnePerDevice(t *testing.T) {
	for _, placed := range []bool{false, true} {
		t.Run(fmt.Sprintf("placement=%v", placed), func(t *testing.T) { gpuWorkers(t, placed) })
	}
}

// gpuWorkers runs two stand-in GPUs, with placement across them or not.
func gpuWorkers(t *testing.T, placed bool) {
	var closed atomic.Int32
	backends := map[string]*countingBackend{}
	selector := func(spec string) ([]app.Device, string, error) {
		if spec != "auto" {
			return nil, "", fmt.Errorf("spec %q", spec)
		}
		var devs []app.Device
		for i := 0; i < 2; i++ {
			name := fmt.Sprintf("cuda:%d", i)
			backends[name] = &countingBackend{Backend: cpu.New()}
			devs = append(devs, app.Device{Name: name, Backend: backends[name], GPUName: "NVIDIA H100 80GB HBM3",
				Memory: 80 << 30, Close: func() error { closed.Add(1); return nil }})
		}
		return devs, "device cuda:0: stand-in; device cuda:1: stand-in", nil
	}
	var mu sync.Mutex
	engines := map[string]int{}
	newEngine := func(dev app.Device, text *textcache.Cache) (worker.Engine, error) {
		mu.Lock()
		engines[dev.Name]++
		mu.Unlock()
		return app.NativeEngine(dev, text)
	}
	s, logs := startWith(t, func(c *config.Config) { c.Workers = 3; c.Placement = placed }, app.Options{SelectDevices: selector, NewEngine: newEngine})
	if n := len(logs.lines("placement across GPUs on")); (n == 1) != placed {
		t.Fatalf("%d placement log lines with placement %v", n, placed)
	}
	if d := s.workerDevices(2); d[0] != "cuda:0" || d[1] != "cuda:1" {
		t.Fatalf("worker devices %v", d)
	}
	if engines["cuda:0"] != 1 || engines["cuda:1"] != 1 || len(engines) != 2 {
		t.Fatalf("engines per device %v", engines)
	}
	if lines := logs.lines("compute devices"); len(lines) != 1 || !strings.Contains(lines[0], `devices="[cuda:0 cuda:1]"`) {
		t.Fatalf("device log lines %q", lines)
	}
	if lines := logs.lines("workers"); len(lines) != 2 || !strings.Contains(lines[0], "hardware_profile=h100-80gb") {
		t.Fatalf("worker log lines %q", lines)
	}
	// Each GPU's budget is 80% of its own memory (h100-80gb), not a share.
	metrics := string(s.do("GET", "/metrics", "", nil).body)
	want := fmt.Sprintf("%g", float64(int64(0.8*float64(80<<30))))
	if n := strings.Count(metrics, "kiln_model_cache_budget_bytes{"); n != 2 {
		t.Fatalf("%d model cache budgets in /metrics", n)
	}
	for _, d := range []string{"cuda:0", "cuda:1"} { // per-GPU series are labelled by device
		if !strings.Contains(metrics, `kiln_model_cache_budget_bytes{worker=`) || !strings.Contains(metrics, `,device="`+d+`"}`) {
			t.Errorf("no series labelled device=%q in /metrics", d)
		}
	}
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "kiln_model_cache_budget_bytes{") && !strings.HasSuffix(line, " "+want) {
			t.Errorf("budget %q, want %s", line, want)
		}
	}
	var ids []string
	for i := 0; i < 4; i++ {
		ids = append(ids, s.submit("", map[string]any{"prompt": fmt.Sprintf("a red circle %d", i), "steps": 3}))
	}
	for _, id := range ids {
		if j := s.waitJob("", id, "succeeded", "failed"); j["status"] != "succeeded" {
			t.Fatalf("job %v", j)
		}
	}
	if backends["cuda:0"].uploads.Load()+backends["cuda:1"].uploads.Load() == 0 {
		t.Fatal("no weights reached the devices' backends")
	}
	if r := s.do("GET", "/readyz", "", nil); r.status != http.StatusOK {
		t.Fatalf("readyz %d", r.status)
	}
	s.in.Stop(context.Background())
	if closed.Load() != 2 {
		t.Fatalf("%d devices released, want 2", closed.Load())
	}
}
