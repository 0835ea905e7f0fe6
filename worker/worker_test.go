package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/server/broker"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/server/metrics"
	"github.com/kiln-project/kiln/worker/modelcache"
)

// testEngine stands in for the diffusion pipeline in these tests of the
// worker's job handling (the end-to-end tests run the real pipeline): it
// paints each image a colour derived from the seed, one step at a time.
type testEngine struct {
	loads atomic.Int32
	// block, when set, makes Generate wait for ctx (or the channel to close)
	// after the first step.
	block chan struct{}
	// started receives the job's prompt when a generation starts.
	started chan string
}

func (e *testEngine) Device() string { return "test" }

func (e *testEngine) Load(ctx context.Context, m catalog.Model) (Model, error) {
	e.loads.Add(1)
	return &testModel{e: e}, nil
}

type testModel struct{ e *testEngine }

func (m *testModel) Close() error { return nil }

func (m *testModel) Generate(ctx context.Context, req Request, onProgress func(Progress)) (*Result, error) {
	if m.e.started != nil {
		m.e.started <- req.Prompt
	}
	img := image.NewRGBA(image.Rect(0, 0, req.Width, req.Height))
	for s := 1; s <= req.Steps; s++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for i := range img.Pix {
			img.Pix[i] = uint8(int(req.Seed) + s*10 + i%4)
		}
		onProgress(Progress{Step: s, Steps: req.Steps, Preview: img})
		if s == 1 && m.e.block != nil {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-m.e.block:
			}
		}
	}
	res := &Result{}
	for i := 0; i < req.N; i++ {
		out := image.NewRGBA(img.Rect)
		copy(out.Pix, img.Pix)
		out.Set(0, 0, color.RGBA{uint8(i), 0, 0, 255})
		res.Images = append(res.Images, out)
		res.Seeds = append(res.Seeds, req.Seed+uint64(i))
	}
	return res, nil
}

type env struct {
	b     *broker.Broker
	store *jobs.Store
	reg   *catalog.Registry
	met   *Metrics
}

func newEnv(t *testing.T, ackWait time.Duration, attempts int) *env {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := broker.Start(ctx, broker.Options{DataDir: filepath.Join(dir, "data")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	st, err := jobs.Open(ctx, b.JS, jobs.Options{Attempts: attempts, AckWait: ackWait, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mdir := filepath.Join(dir, "models", "toy")
	os.MkdirAll(mdir, 0o755)
	os.WriteFile(filepath.Join(mdir, "model_index.json"), []byte("{}"), 0o644)
	reg := catalog.New(nil, filepath.Join(dir, "models"), "")
	reg.Refresh()
	return &env{b: b, store: st, reg: reg, met: NewMetrics(metrics.NewRegistry())}
}

func (e *env) worker(t *testing.T, eng Engine, id string, shutdown time.Duration, opts ...func(*Options)) *Worker {
	t.Helper()
	o := Options{ID: id, Store: e.store, Conn: e.b.Conn, Engine: eng, Models: e.reg,
		Cache: modelcache.New(1<<30, nil), Metrics: e.met, PreviewEvery: 1, PreviewSize: 16,
		HeartbeatInterval: 100 * time.Millisecond, ShutdownTimeout: shutdown}
	for _, f := range opts {
		f(&o)
	}
	w, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func run(t *testing.T, w *Worker) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("worker did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (e *env) submit(t *testing.T, prompt string, n int) *jobs.Job {
	t.Helper()
	j := &jobs.Job{ID: jobs.NewID(), Tenant: "acme", Status: jobs.StatusQueued, CreatedAt: time.Now().UTC(),
		Params: jobs.Params{Model: "toy", Prompt: prompt, NegativePrompt: "blurry", Width: 16, Height: 8, Steps: 3,
			Guidance: 7, Sampler: "euler", Seed: 40, N: n, Priority: jobs.PriorityNormal}}
	if err := e.store.Submit(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	_ = e.b.Conn.Publish(events.KickSubject, []byte(jobs.PriorityNormal))
	return j
}

func (e *env) waitStatus(t *testing.T, j *jobs.Job, want string) *jobs.Job {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, _, err := e.store.Get(context.Background(), j.Tenant, j.ID)
		if err == nil && r.Status == want {
			return r
		}
		if err == nil && jobs.Final(r.Status) {
			t.Fatalf("job %s ended %s (error %+v), want %s", j.ID, r.Status, r.Error, want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: status %v (err %v), want %s", j.ID, r, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestJobRunsToSuccess(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	var progress, previews atomic.Int32
	sub1, _ := e.b.Conn.Subscribe(events.ProgressWildcard, func(m *nats.Msg) {
		var ev events.Event
		if json.Unmarshal(m.Data, &ev) == nil && ev.Type == events.TypeProgress && ev.Steps == 3 {
			progress.Add(1)
		}
	})
	defer sub1.Unsubscribe()
	sub2, _ := e.b.Conn.Subscribe(events.PreviewWildcard, func(m *nats.Msg) {
		if p, err := events.DecodePreview(m.Data); err == nil && p.Width == 16 && p.Height == 8 && len(p.JPEG) > 0 {
			previews.Add(1)
		}
	})
	defer sub2.Unsubscribe()

	eng := &testEngine{}
	run(t, e.worker(t, eng, "w1", time.Second))
	j := e.submit(t, "a lighthouse", 2)
	r := e.waitStatus(t, j, jobs.StatusSucceeded)
	if r.Attempts != 1 || r.Worker != "w1" || len(r.Images) != 2 || r.StartedAt == nil || r.FinishedAt == nil {
		t.Fatalf("record %+v", r)
	}
	for i, im := range r.Images {
		data, err := e.store.GetImage(context.Background(), "acme", im.ID)
		if err != nil {
			t.Fatal(err)
		}
		txt, err := imageio.ReadParameters(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		want := "a lighthouse\nNegative prompt: blurry\nSteps: 3, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: " +
			[]string{"40", "41"}[i] + ", Size: 16x8, Model: toy, RNG: CPU, Version: kiln "
		if !strings.HasPrefix(txt, want) {
			t.Fatalf("parameters %q, want %q", txt, want)
		}
	}
	// Another tenant's view of the image is empty.
	if _, err := e.store.GetImage(context.Background(), "other", r.Images[0].ID); err != jobs.ErrNotFound {
		t.Fatalf("cross-tenant image read: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for (progress.Load() < 3 || previews.Load() < 3) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if progress.Load() < 3 || previews.Load() < 3 {
		t.Fatalf("progress events %d, previews %d; want 3 each", progress.Load(), previews.Load())
	}
	// A second job reuses the loaded model.
	e.waitStatus(t, e.submit(t, "again", 1), jobs.StatusSucceeded)
	if eng.loads.Load() != 1 {
		t.Fatalf("model loaded %d times", eng.loads.Load())
	}
}

func TestCancelRunningJob(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	eng := &testEngine{block: make(chan struct{}), started: make(chan string, 4)}
	run(t, e.worker(t, eng, "w1", time.Second))
	j := e.submit(t, "slow", 1)
	<-eng.started
	if _, err := e.store.Update(context.Background(), j.Tenant, j.ID, func(r *jobs.Job) error {
		r.CancelRequested = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Conn.Publish(events.CancelSubject(j.Tenant, j.ID), nil); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(t, j, jobs.StatusCanceled)
	// A queued job canceled before any worker took it is never started.
	close(eng.block)
}

func TestRedeliveryAfterWorkerDeath(t *testing.T) {
	e := newEnv(t, time.Second, 2)
	j := e.submit(t, "orphan", 1)
	// A worker takes the job and dies: claim it by hand and never ack.
	msg := (&Worker{o: Options{Store: e.store}, queue: e.store.FairQueue()}).fetchWait(context.Background(), jobs.PriorityNormal, 10*time.Second)
	if msg == nil {
		t.Fatal("no message")
	}
	if _, err := e.store.Update(context.Background(), j.Tenant, j.ID, func(r *jobs.Job) error {
		r.Status, r.Worker, r.Attempts = jobs.StatusRunning, "dead", 1
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	run(t, e.worker(t, &testEngine{}, "w2", time.Second))
	r := e.waitStatus(t, j, jobs.StatusSucceeded)
	if r.Worker != "w2" || r.Attempts != 2 {
		t.Fatalf("record %+v, want worker w2, attempt 2", r)
	}
}

func TestAttemptsAreBounded(t *testing.T) {
	e := newEnv(t, time.Second, 2)
	j := e.submit(t, "cursed", 1)
	// Two workers already died running it.
	if _, err := e.store.Update(context.Background(), j.Tenant, j.ID, func(r *jobs.Job) error {
		r.Status, r.Worker, r.Attempts = jobs.StatusRunning, "dead", 2
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	eng := &testEngine{}
	run(t, e.worker(t, eng, "w3", time.Second))
	r := e.waitStatus(t, j, jobs.StatusFailed)
	if r.Error == nil || r.Error.Code != jobs.ErrCodeAttempts {
		t.Fatalf("error %+v", r.Error)
	}
	if eng.loads.Load() != 0 {
		t.Fatal("exhausted job was run")
	}
}

func TestShutdownHandsBackRunningJob(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	eng := &testEngine{block: make(chan struct{}), started: make(chan string, 4)}
	stop := run(t, e.worker(t, eng, "w1", 200*time.Millisecond))
	j := e.submit(t, "long", 1)
	<-eng.started
	stop() // the job outlives the grace period: handed back
	r := e.waitStatus(t, j, jobs.StatusQueued)
	if r.Attempts != 0 || r.Worker != "" {
		t.Fatalf("handed-back record %+v", r)
	}
	close(eng.block)
	run(t, e.worker(t, &testEngine{}, "w2", time.Second))
	r = e.waitStatus(t, j, jobs.StatusSucceeded)
	if r.Worker != "w2" || r.Attempts != 1 {
		t.Fatalf("record %+v", r)
	}
}

func TestShutdownLetsShortJobFinish(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	eng := &testEngine{block: make(chan struct{}), started: make(chan string, 4)}
	w := e.worker(t, eng, "w1", 30*time.Second)
	stop := run(t, w)
	j := e.submit(t, "short", 1)
	<-eng.started
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	time.Sleep(50 * time.Millisecond) // let the shutdown begin while the job runs
	close(eng.block)
	<-stopped
	e.waitStatus(t, j, jobs.StatusSucceeded)
}

func TestSchedulerAnswerIsValidated(t *testing.T) {
	p := []Pending{{Job: &jobs.Job{}}, {Job: &jobs.Job{}}}
	for _, d := range []Decision{{Run: []int{2}}, {Run: []int{0, 0}}, {Run: []int{-1}}, {Wait: 0}, {Wait: time.Hour}} {
		if checkDecision(d, len(p), 10*time.Second) == nil {
			t.Fatalf("decision %+v accepted", d)
		}
	}
	if err := checkDecision(Decision{Run: []int{1, 0}}, 2, time.Second); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	d, _ := FCFS{}.Decide(now, []Pending{
		{Job: &jobs.Job{CreatedAt: now, Params: jobs.Params{Priority: jobs.PriorityLow}}},
		{Job: &jobs.Job{CreatedAt: now.Add(time.Second), Params: jobs.Params{Priority: jobs.PriorityHigh}}},
	}, Stats{})
	if len(d.Run) != 1 || d.Run[0] != 1 {
		t.Fatalf("FCFS chose %v, want the high-priority job", d.Run)
	}
}

// failingEngine cannot load any model.
type failingEngine struct{ testEngine }

func (e *failingEngine) Load(context.Context, catalog.Model) (Model, error) {
	return nil, errors.New("checkpoint is corrupt")
}

func TestModelLoadFailureFailsTheJob(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	run(t, e.worker(t, &failingEngine{}, "w1", time.Second))
	r := e.waitStatus(t, e.submit(t, "x", 1), jobs.StatusFailed)
	if r.Error == nil || r.Error.Code != jobs.ErrCodeModel || !strings.Contains(r.Error.Message, "corrupt") {
		t.Fatalf("error %+v", r.Error)
	}
	// A job for a model the worker does not have fails the same way.
	j := &jobs.Job{ID: jobs.NewID(), Tenant: "acme", Status: jobs.StatusQueued, CreatedAt: time.Now().UTC(),
		Params: jobs.Params{Model: "absent", Prompt: "x", Width: 8, Height: 8, Steps: 1, N: 1, Priority: jobs.PriorityHigh}}
	e.store.Submit(context.Background(), j)
	e.b.Conn.Publish(events.KickSubject, []byte(jobs.PriorityHigh))
	if r := e.waitStatus(t, j, jobs.StatusFailed); r.Error.Code != jobs.ErrCodeModel {
		t.Fatalf("absent model: %+v", r.Error)
	}
}

// panicEngine's model panics mid-generation.
type panicEngine struct{ testEngine }

func (e *panicEngine) Load(context.Context, catalog.Model) (Model, error) { return panicModel{}, nil }

type panicModel struct{}

func (panicModel) Close() error { return nil }
func (panicModel) Generate(context.Context, Request, func(Progress)) (*Result, error) {
	var m map[string]int
	//lint:ignore SA5000 the nil-map write is the deliberate bug: a bug in model code must fail one job, not the worker
	m["boom"]++
	return nil, nil
}

func TestEnginePanicFailsOnlyTheJob(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	run(t, e.worker(t, &panicEngine{}, "w1", time.Second))
	r := e.waitStatus(t, e.submit(t, "x", 1), jobs.StatusFailed)
	if r.Error.Code != jobs.ErrCodeEngine || !strings.Contains(r.Error.Message, "panic") {
		t.Fatalf("error %+v", r.Error)
	}
	e.waitStatus(t, e.submit(t, "y", 1), jobs.StatusFailed) // the worker is still alive
}

// TestWorkerServesTenantsFairly: with a backlog of thirty jobs of one
// tenant queued before three of another, the worker alternates between
// them instead of serving the backlog first.
func TestWorkerServesTenantsFairly(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	submit := func(tenant, prompt string) {
		j := &jobs.Job{ID: jobs.NewID(), Tenant: tenant, Status: jobs.StatusQueued, CreatedAt: time.Now().UTC(),
			Params: jobs.Params{Model: "toy", Prompt: prompt, Width: 16, Height: 8, Steps: 1, Guidance: 7, Sampler: "euler",
				N: 1, Priority: jobs.PriorityNormal}}
		if err := e.store.Submit(context.Background(), j); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 30; i++ {
		submit("heavy", "heavy")
	}
	for i := 0; i < 3; i++ {
		submit("light", "light")
	}
	// Consumer counts settle asynchronously: start once both lanes show
	// their backlog (the fair queue lists lanes every 100 ms).
	for deadline := time.Now().Add(10 * time.Second); ; {
		lanes, err := e.store.Lanes(context.Background())
		pending := map[string]int{}
		for _, l := range lanes {
			pending[l.Tenant] += l.Pending
		}
		if err == nil && pending["heavy"] == 30 && pending["light"] == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lanes never showed the backlog: %v %v", pending, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	eng := &testEngine{started: make(chan string, 64)}
	run(t, e.worker(t, eng, "w1", time.Second))
	light := 0
	for i := 0; i < 6; i++ {
		select {
		case p := <-eng.started:
			if p == "light" {
				light++
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the worker stopped starting jobs")
		}
	}
	if light != 3 {
		t.Fatalf("light's jobs among the first six started: %d, want 3", light)
	}
}
