package wasmadapter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"io"
	"log/slog"
	"math"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kiln-project/kiln/gateway/api"
	"github.com/kiln-project/kiln/policies"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/wasmhost"
	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/kiln-project/kiln/wasmhost/conformance"
	"github.com/kiln-project/kiln/wasmhost/registry"
	"github.com/kiln-project/kiln/worker"
	"github.com/kiln-project/kiln/worker/modelcache"
)

var (
	cacheOnce sync.Once
	cacheDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if cacheDir != "" {
		os.RemoveAll(cacheDir)
	}
	os.Exit(code)
}

func start(t *testing.T) *Wasm {
	t.Helper()
	cacheOnce.Do(func() {
		d, err := os.MkdirTemp("", "kiln-adapter-test-")
		if err != nil {
			t.Fatal(err)
		}
		cacheDir = d
	})
	w, err := Start(context.Background(), Options{Host: wasmhost.Config{CacheDir: cacheDir, PolicyTimeout: 10 * time.Second, NodeTimeout: 20 * time.Second},
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Budgets: conformance.Budgets{PolicyCall: 10 * time.Second, NodeCall: 20 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close(context.Background()) })
	return w
}

func job(id, tenant, priority string, age time.Duration, width int) *jobs.Job {
	return &jobs.Job{ID: id, Tenant: tenant, CreatedAt: time.Now().Add(-age),
		Params: jobs.Params{Model: "m", Width: width, Height: 512, Steps: 20, Sampler: "euler", Guidance: 7, N: 1, Priority: priority}}
}

func pending(js ...*jobs.Job) []worker.Pending {
	out := make([]worker.Pending, len(js))
	for i, j := range js {
		out[i] = worker.Pending{Job: j, Arrived: time.Now()}
	}
	return out
}

func TestSchedulerAsksTheBatchingPolicy(t *testing.T) {
	w := start(t)
	s := w.Scheduler(SchedulerOptions{MaxBatch: 4})
	p := pending(
		job("a", "t1", jobs.PriorityNormal, 3*time.Second, 512),
		job("b", "t1", jobs.PriorityHigh, time.Second, 768),
		job("c", "t2", jobs.PriorityNormal, 2*time.Second, 512),
		job("d", "t2", jobs.PriorityHigh, time.Second/2, 768),
	)
	linear := worker.Stats{StepLatency: []worker.StepLatency{{Images: 1, Latency: time.Millisecond}, {Images: 2, Latency: 2 * time.Millisecond}}}
	d, err := s.Decide(time.Now(), p, linear)
	if err != nil {
		t.Fatal(err)
	}
	// High priority first; b and d share a compatibility key (768 wide);
	// a linear latency table means no waiting.
	if len(d.Run) != 2 || d.Wait != 0 || p[d.Run[0]].Job.Params.Priority != jobs.PriorityHigh || p[d.Run[1]].Job.Params.Priority != jobs.PriorityHigh {
		t.Fatalf("decision %+v", d)
	}
	if n := w.Host.Metrics().Calls("builtin", abi.HookBatching, wasmhost.ResultOK); n != 1 {
		t.Fatalf("batching calls %d", n)
	}
	// Fairness: t1 and t2 each got one image; give t1 more and its next
	// equal job loses to t2's although older.
	s.mu.Lock()
	s.served["t1"] += 10
	s.mu.Unlock()
	p = pending(job("e", "t1", jobs.PriorityNormal, 5*time.Second, 512), job("f", "t2", jobs.PriorityNormal, time.Second, 640))
	d, _ = s.Decide(time.Now(), p, linear)
	if len(d.Run) != 1 || p[d.Run[0]].Job.ID != "f" {
		t.Fatalf("fairness decision %+v", d)
	}
	// When the worker has measured GPU-like step latencies (a fuller
	// batch costs less per image) a lone job waits for company, within
	// max_wait.
	gpu := worker.Stats{StepLatency: []worker.StepLatency{{Images: 1, Latency: 28 * time.Millisecond}, {Images: 4, Latency: 33300 * time.Microsecond}}}
	s = w.Scheduler(SchedulerOptions{MaxBatch: 4, MaxWait: 300 * time.Millisecond})
	lone := pending(job("g", "t1", jobs.PriorityNormal, 0, 512))
	if in := s.Input(time.Now(), lone, gpu); len(in.StepLatency) != 2 || in.StepLatency[1] != (abi.StepLatency{Batch: 4, LatencyUS: 33300}) {
		t.Fatalf("step latency passed to the policy: %+v", in.StepLatency)
	}
	d, _ = s.Decide(time.Now(), lone, gpu)
	if len(d.Run) != 0 || d.Wait <= 0 || d.Wait > 300*time.Millisecond {
		t.Fatalf("GPU decision %+v", d)
	}
	// Measurements that show no gain (the linear table) dispatch at once.
	if d, _ = s.Decide(time.Now(), lone, linear); len(d.Run) != 1 {
		t.Fatalf("no-gain decision %+v", d)
	}
	// The operator's table overrides the measurements.
	s = w.Scheduler(SchedulerOptions{MaxBatch: 4, MaxWait: 300 * time.Millisecond, StepLatency: func() []abi.StepLatency {
		return []abi.StepLatency{{Batch: 1, LatencyUS: 1000}, {Batch: 2, LatencyUS: 2000}}
	}})
	if d, _ = s.Decide(time.Now(), lone, gpu); len(d.Run) != 1 {
		t.Fatalf("override decision %+v", d)
	}
}

func TestStepLatencyABI(t *testing.T) {
	ls := []worker.StepLatency{{Images: 0, Latency: time.Second}, {Images: 1, Latency: 0}, {Images: 2, Latency: 500 * time.Nanosecond}, {Images: 3, Latency: 2 * time.Hour}}
	for i := 4; i < 400; i++ {
		ls = append(ls, worker.StepLatency{Images: i, Latency: time.Millisecond})
	}
	got := StepLatencyABI(ls)
	if len(got) != 256 || got[0] != (abi.StepLatency{Batch: 2, LatencyUS: 1}) || got[1].LatencyUS != math.MaxUint32 {
		t.Fatalf("converted %d points, first %+v %+v", len(got), got[0], got[1])
	}
}

type fakeModel struct {
	id     string
	closed *[]string
}

func (f fakeModel) Close() error { *f.closed = append(*f.closed, f.id); return nil }

// fakeLoader returns a function that acquires and releases a fake model
// of the given size; closed models are appended to closed.
func fakeLoader(t *testing.T, cache *modelcache.Cache, closed *[]string) func(id string, size int64) {
	return func(id string, size int64) {
		t.Helper()
		_, release, err := cache.Acquire(context.Background(), id, size, func(context.Context) (modelcache.Resident, error) {
			return fakeModel{id, closed}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		release()
		time.Sleep(2 * time.Millisecond) // distinct last-use times
	}
}

func TestEvictionAsksThePolicy(t *testing.T) {
	w := start(t)
	cache := modelcache.New(10<<30, w.Eviction())
	var closed []string
	load := fakeLoader(t, cache, &closed)
	load("small-old", 1<<30)
	load("big", 6<<30)
	load("recent", 2<<30)
	// 9 GiB resident of 10; 3 GiB more needed: the size-aware LRU gives
	// back small-old (big alone covers the need) — plain LRU would drop
	// both small-old and big.
	load("new", 3<<30)
	if strings.Join(closed, ",") != "big" {
		t.Fatalf("evicted %v, want [big]", closed)
	}
	if s := cache.Stats(); s.PolicyFallbacks != 0 {
		t.Fatalf("policy fell back: %+v", s)
	}
	if n := w.Host.Metrics().Calls("builtin", abi.HookEviction, wasmhost.ResultOK); n != 1 {
		t.Fatalf("eviction calls %d", n)
	}
}

func TestQualityAdjustsUnderLoad(t *testing.T) {
	w := start(t)
	q := w.Quality()
	now := time.Unix(1_700_000_000, 0)
	q.Now = func() time.Time { return now }
	in := api.QualityInput{Tenant: "acme", QueueDepth: 2, P50: time.Second, P95: 9 * time.Second, Target: 4 * time.Second,
		Params: jobs.Params{Steps: 30, Width: 768, Height: 512, Sampler: "euler", Profile: "balanced", Model: "sd", Prompt: "x"},
		Limits: config.Quota{MaxSteps: 50, MaxPixels: 1 << 20}}
	var res api.QualityResult
	for i := 0; i < 6; i++ {
		var err error
		if res, err = q.Adjust(context.Background(), in); err != nil {
			t.Fatal(err)
		}
	}
	out := res.Params
	if q.Level("acme", "balanced", "sd") != 1 || out.Steps != 15 || out.Width >= 768 || out.Prompt != "x" || res.Reason == "" {
		t.Fatalf("overloaded: level %v params %+v reason %q", q.Level("acme", "balanced", "sd"), out, res.Reason)
	}
	// State is per (tenant, profile, model).
	if q.Level("globex", "balanced", "sd") != 0 || q.Level("acme", "speed_first", "sd") != 0 || q.Level("acme", "balanced", "other") != 0 {
		t.Fatal("levels leak across tenants, profiles or models")
	}
	// Locked parameters never move, even at level 1.
	in.Locked = map[string]bool{"steps": true, "width": true, "height": true}
	if res, _ := q.Adjust(context.Background(), in); res.Params.Steps != 30 || res.Params.Width != 768 || res.Params.Height != 512 {
		t.Fatalf("locked: %+v", res.Params)
	}
	in.Locked = nil
	// The level decays while no request comes: ten minutes later it is gone.
	now = now.Add(10 * time.Minute)
	if l := q.Level("acme", "balanced", "sd"); l != 0 {
		t.Fatalf("level after ten idle minutes: %v", l)
	}
	in.P95 = time.Second
	res, _ = q.Adjust(context.Background(), in)
	if res.Params.Steps != 30 || res.Params.Width != 768 {
		t.Fatalf("recovered: %+v", res.Params)
	}
}

func TestNodes(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	params := jobs.Params{Prompt: "a fox", Width: 512, Height: 512, Steps: 20, Guidance: 7, Sampler: "euler", Seed: 4,
		Nodes: json.RawMessage(`{"pre":[{"name":"style","params":{"preset":"photo"}},{"name":"blocklist","params":{"words":"gore"}}],
			"post":[{"name":"resize","params":{"width":"64"}},{"name":"watermark","params":{"text":"K"}}]}`)}
	out, aerr := w.PreNodes(ctx, "acme", params)
	if aerr != nil || !strings.HasPrefix(out.Prompt, "a fox, photograph") || out.Seed != 4 {
		t.Fatalf("pre: %+v %v", out, aerr)
	}
	params.Prompt = "gore everywhere"
	if _, aerr := w.PreNodes(ctx, "acme", params); aerr == nil || aerr.Status != 422 || aerr.Code != CodeNodeRejected {
		t.Fatalf("blocked prompt: %v", aerr)
	}
	for _, bad := range []string{`{"pre":[{"name":"nope"}]}`, `{"pre":[{"nam":"style"}]}`, `{"post":[{"name":"style"}]}`, `[1]`} {
		p := params
		p.Nodes = json.RawMessage(bad)
		if _, aerr := w.PreNodes(ctx, "acme", p); aerr == nil || aerr.Status != 400 || aerr.Field != "nodes" {
			t.Fatalf("%s: %v", bad, aerr)
		}
	}
	img := image.NewRGBA(image.Rect(0, 0, 128, 96))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	j := &jobs.Job{ID: "j", Tenant: "acme", Params: params}
	imgs, err := w.Post(ctx, j, []image.Image{img, img})
	if err != nil || len(imgs) != 2 || imgs[0].Bounds().Dx() != 64 || imgs[0].Bounds().Dy() != 48 {
		t.Fatalf("post: %v %v", imgs, err)
	}
	if c := color.NRGBAModel.Convert(imgs[1].At(0, 0)).(color.NRGBA); c != (color.NRGBA{255, 255, 255, 255}) {
		t.Fatalf("post pixel %v", c)
	}
	j.Params.Nodes = json.RawMessage(`{"post":[{"name":"crop","params":{"x":"500","width":"9"}}]}`)
	var rej *registry.Rejection
	if _, err := w.Post(ctx, j, []image.Image{img}); !errors.As(err, &rej) || rej.Node != "crop" {
		t.Fatalf("rejected post: %v", err)
	}
}

func TestUploadAPI(t *testing.T) {
	w := start(t)
	e := echo.New()
	auth := func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.Set("tenant", c.Request().Header.Get("X-Tenant"))
			return next(c)
		}
	}
	w.Routes(e, auth, func(c echo.Context) (string, bool) {
		t, _ := c.Get("tenant").(string)
		return t, t == "local"
	})
	do := func(method, path, tenant string, body []byte) (int, string) {
		req := httptest.NewRequest(method, path, bytes.NewReader(body))
		req.Header.Set("X-Tenant", tenant)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	wasm := policies.Builtin()
	if code, body := do("PUT", "/v1/policies/batching/fair?mode=shadow", "acme", wasm); code != 403 {
		t.Fatalf("tenant batching upload: %d %s", code, body)
	}
	if code, body := do("PUT", "/v1/policies/batching/fair?mode=shadow", "local", wasm); code != 201 || !strings.Contains(body, `"version":1`) {
		t.Fatalf("operator upload: %d %s", code, body)
	}
	if code, body := do("PUT", "/v1/policies/batching/junk", "local", []byte("junk")); code != 422 || !strings.Contains(body, CodeModuleRejected) {
		t.Fatalf("junk upload: %d %s", code, body)
	}
	// Decisions go on with the built-in policy; the shadow sees them.
	s := w.Scheduler(SchedulerOptions{MaxBatch: 2})
	for i := 0; i < 5; i++ {
		s.Decide(time.Now(), pending(job("a", "t1", jobs.PriorityNormal, time.Second, 512), job("b", "t2", jobs.PriorityNormal, time.Second, 512)), worker.Stats{})
		w.Registry.WaitShadows()
	}
	code, body := do("GET", "/v1/policies/batching/fair", "local", nil)
	var info struct {
		Versions []registry.Version `json:"versions"`
		Slot     registry.SlotInfo  `json:"slot"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &info) != nil || info.Slot.Shadow == nil || info.Slot.Shadow.Compared != 5 || info.Slot.Shadow.Agreement != 1 {
		t.Fatalf("shadow stats: %d %s", code, body)
	}
	if code, body := do("POST", "/v1/policies/batching/fair/activate", "local", nil); code != 200 || !strings.Contains(body, `"active":{"name":"fair","version":1}`) {
		t.Fatalf("activate: %d %s", code, body)
	}
	if code, body := do("POST", "/v1/policies/batching/rollback", "local", nil); code != 200 || !strings.Contains(body, `"active":null`) {
		t.Fatalf("rollback: %d %s", code, body)
	}
	if code, _ := do("POST", "/v1/policies/batching/rollback", "local", nil); code != 409 {
		t.Fatalf("rollback past the default: %d", code)
	}
	// Tenants upload quality policies for themselves.
	if code, body := do("PUT", "/v1/policies/quality/mine?mode=activate", "acme", wasm); code != 201 || !strings.Contains(body, `"scope":"acme"`) {
		t.Fatalf("tenant quality: %d %s", code, body)
	}
	if code, body := do("GET", "/v1/policies/quality", "globex", nil); code != 200 || !strings.Contains(body, `"active":null`) {
		t.Fatalf("other tenant's slot: %d %s", code, body)
	}
	if code, body := do("GET", "/v1/nodes", "acme", nil); code != 200 || !strings.Contains(body, `"name":"watermark","builtin":true`) {
		t.Fatalf("nodes: %d %s", code, body)
	}
	if code, _ := do("PUT", "/v1/nodes/resize", "acme", wasm); code != 403 {
		t.Fatalf("built-in node name: %d", code)
	}
	if code, _ := do("GET", "/v1/policies/sampling", "acme", nil); code != 404 {
		t.Fatalf("unknown hook: %d", code)
	}
	var m bytes.Buffer
	if err := w.WriteMetrics(&m); err != nil || !strings.Contains(m.String(), `kiln_wasm_calls_total{module="batching/fair@v1",hook="batching",result="ok"} 5`) {
		t.Fatalf("metrics: %v\n%s", err, m.String())
	}
}

// TestSchedulerPassesTenantWeights: the batching policy sees each tenant's
// weight as the gateway recorded it in the jobs.
func TestSchedulerPassesTenantWeights(t *testing.T) {
	w := start(t)
	s := w.Scheduler(SchedulerOptions{MaxBatch: 4})
	heavy := job("a", "t1", jobs.PriorityNormal, time.Second, 512)
	heavy.Weight = 3
	p := pending(heavy, job("b", "t2", jobs.PriorityNormal, time.Second, 512))
	in := s.Input(time.Now(), p, worker.Stats{})
	if len(in.Tenants) != 2 || in.Tenants[0].Weight != 3 || in.Tenants[1].Weight != 1 {
		t.Fatalf("tenant shares %+v", in.Tenants)
	}
}
