package worker

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/png"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/jobs"
)

// batchEngine's model generates a batch the way the pipeline does: every
// step evaluates the images of all items still running at once; an item
// whose context ends leaves the batch.
type batchEngine struct {
	mu      sync.Mutex
	batches [][]string // prompts of each GenerateBatch call
	singles []string   // prompts of each Generate call
	// block, when set, holds the batch after its first step until closed.
	block   chan struct{}
	started chan []string
}

func (e *batchEngine) Device() string { return "test" }

func (e *batchEngine) Load(ctx context.Context, m catalog.Model) (Model, error) {
	return &batchModel{e: e}, nil
}

type batchModel struct{ e *batchEngine }

func (m *batchModel) Close() error { return nil }

func (m *batchModel) Generate(ctx context.Context, req Request, onProgress func(Progress)) (*Result, error) {
	m.e.mu.Lock()
	m.e.singles = append(m.e.singles, req.Prompt)
	m.e.mu.Unlock()
	r := m.GenerateBatch(ctx, []BatchItem{{Ctx: ctx, Request: req}}, func(_ int, p Progress) { onProgress(p) })
	return r[0].Result, r[0].Err
}

func (m *batchModel) GenerateBatch(ctx context.Context, items []BatchItem, onProgress func(int, Progress)) []BatchResult {
	var prompts []string
	for _, it := range items {
		prompts = append(prompts, it.Request.Prompt)
	}
	if len(items) > 1 {
		m.e.mu.Lock()
		m.e.batches = append(m.e.batches, prompts)
		m.e.mu.Unlock()
	}
	if m.e.started != nil {
		m.e.started <- prompts
	}
	out := make([]BatchResult, len(items))
	steps := items[0].Request.Steps
	for s := 1; s <= steps; s++ {
		if err := ctx.Err(); err != nil {
			for k := range out {
				out[k].Err = err
			}
			return out
		}
		images := 0
		for k, it := range items {
			if out[k].Err == nil {
				if err := it.Ctx.Err(); err != nil {
					out[k].Err = err // leaves the batch
				} else {
					images += it.Request.N
				}
			}
		}
		for k, it := range items {
			if out[k].Err == nil {
				img := image.NewRGBA(image.Rect(0, 0, it.Request.Width, it.Request.Height))
				onProgress(k, Progress{Step: s, Steps: steps, Preview: img, Eval: s, Batch: images, StepTime: time.Duration(images) * time.Millisecond})
			}
		}
		if s == 1 && m.e.block != nil {
			<-m.e.block
		}
	}
	for k, it := range items {
		if out[k].Err != nil {
			continue
		}
		res := &Result{}
		for i := 0; i < it.Request.N; i++ {
			img := image.NewRGBA(image.Rect(0, 0, it.Request.Width, it.Request.Height))
			img.Set(0, 0, color.RGBA{uint8(len(it.Request.Prompt)), uint8(i), 0, 255})
			res.Images = append(res.Images, img)
			res.Seeds = append(res.Seeds, it.Request.Seed+uint64(i))
		}
		out[k].Result = res
	}
	return out
}

// waitFor is a scheduler that holds jobs until n are pending, then runs
// them all as one batch; it records the stats it is given.
type waitFor struct {
	n     int
	mu    sync.Mutex
	stats []Stats
}

func (s *waitFor) Decide(now time.Time, pending []Pending, st Stats) (Decision, error) {
	s.mu.Lock()
	s.stats = append(s.stats, st)
	s.mu.Unlock()
	if len(pending) < s.n {
		return Decision{Wait: 50 * time.Millisecond}, nil
	}
	d := Decision{}
	for i := range pending {
		d.Run = append(d.Run, i)
	}
	return d, nil
}

func TestCompatibleJobsRunAsOneBatch(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	eng := &batchEngine{}
	sched := &waitFor{n: 3}
	w := e.worker(t, eng, "w1", time.Second, func(o *Options) { o.Scheduler, o.Window = sched, 4 })
	run(t, w)
	a, b, c := e.submit(t, "one", 1), e.submit(t, "two", 2), e.submit(t, "three", 1)
	for _, j := range []*jobs.Job{a, b, c} {
		r := e.waitStatus(t, j, jobs.StatusSucceeded)
		if len(r.Images) != j.Params.N {
			t.Fatalf("job %s: %d images", j.Params.Prompt, len(r.Images))
		}
		data, err := e.store.GetImage(context.Background(), "acme", r.Images[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if txt, _ := imageio.ReadParameters(bytes.NewReader(data)); !strings.HasPrefix(txt, j.Params.Prompt+"\n") {
			t.Fatalf("job %s stored %q", j.Params.Prompt, txt)
		}
	}
	eng.mu.Lock()
	batches, singles := eng.batches, eng.singles
	eng.mu.Unlock()
	if len(batches) != 1 || len(batches[0]) != 3 || len(singles) != 0 {
		t.Fatalf("batches %v, single runs %v; want the three jobs in one batch", batches, singles)
	}
	// The batch's steps were measured at its size (4 images) once per
	// step, and the scheduler gets them with the next decision.
	lat := w.StepLatency("toy", 16, 8)
	if len(lat) != 1 || lat[0].Images != 4 || lat[0].Latency != 4*time.Millisecond {
		t.Fatalf("measured step latency %+v", lat)
	}
	e.submit(t, "four", 1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		sched.mu.Lock()
		last := sched.stats[len(sched.stats)-1]
		sched.mu.Unlock()
		if len(last.StepLatency) == 1 && last.StepLatency[0].Images == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scheduler was not given the measured latency: %+v", last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCancelOneJobOfABatch(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	eng := &batchEngine{block: make(chan struct{}), started: make(chan []string, 4)}
	w := e.worker(t, eng, "w1", time.Second, func(o *Options) { o.Scheduler, o.Window = &waitFor{n: 3}, 4 })
	run(t, w)
	a, b, c := e.submit(t, "keep", 1), e.submit(t, "drop", 1), e.submit(t, "also keep", 1)
	if got := <-eng.started; len(got) != 3 {
		t.Fatalf("batch %v", got)
	}
	if _, err := e.store.Update(context.Background(), b.Tenant, b.ID, func(r *jobs.Job) error {
		r.CancelRequested = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Conn.Publish(events.CancelSubject(b.Tenant, b.ID), nil); err != nil {
		t.Fatal(err)
	}
	// The canceled job is settled at once, while its batch is still
	// running (held after its first step); the others finish normally.
	e.waitStatus(t, b, jobs.StatusCanceled)
	if !w.generating() {
		t.Fatal("the batch ended before the cancel was settled")
	}
	close(eng.block)
	e.waitStatus(t, a, jobs.StatusSucceeded)
	e.waitStatus(t, c, jobs.StatusSucceeded)
}

// generating reports whether the worker still holds running jobs.
func (w *Worker) generating() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.running) > 0
}

func decodePNG(data []byte) (image.Image, error) { return png.Decode(bytes.NewReader(data)) }

func TestPostProcessingOverlapsTheNextGeneration(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	eng := &testEngine{started: make(chan string, 4)}
	secondStarted := make(chan struct{})
	go func() {
		for p := range eng.started {
			if p == "second" {
				close(secondStarted)
				return
			}
		}
	}()
	var overlapped atomic.Bool
	post := func(ctx context.Context, j *jobs.Job, imgs []image.Image) ([]image.Image, error) {
		if j.Params.Prompt == "first" {
			// A slow post node: it finishes only once the next job is
			// generating (or gives up, failing the job).
			select {
			case <-secondStarted:
				overlapped.Store(true)
			case <-time.After(20 * time.Second):
				return nil, errors.New("the next job did not start while this one was post-processing")
			}
		}
		out := make([]image.Image, len(imgs))
		for i, im := range imgs {
			g := image.NewGray(im.Bounds())
			for y := 0; y < g.Rect.Dy(); y++ {
				for x := 0; x < g.Rect.Dx(); x++ {
					g.Set(x, y, im.At(x, y))
				}
			}
			out[i] = g
		}
		return out, nil
	}
	run(t, e.worker(t, eng, "w1", time.Second, func(o *Options) { o.Post = post }))
	first := e.submit(t, "first", 1)
	second := e.submit(t, "second", 1)
	r := e.waitStatus(t, first, jobs.StatusSucceeded)
	e.waitStatus(t, second, jobs.StatusSucceeded)
	if !overlapped.Load() {
		t.Fatal("post-processing did not overlap the next generation")
	}
	data, err := e.store.GetImage(context.Background(), "acme", r.Images[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	img, err := decodePNG(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := img.(*image.Gray); !ok {
		t.Fatalf("stored image is %T, want the post-processed grayscale", img)
	}
}

func TestPostFailureFailsTheJob(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	post := func(ctx context.Context, j *jobs.Job, imgs []image.Image) ([]image.Image, error) {
		if j.Params.Prompt == "panic" {
			panic("node bug")
		}
		return nil, errors.New("node watermark: text too long")
	}
	run(t, e.worker(t, &testEngine{}, "w1", time.Second, func(o *Options) { o.Post = post }))
	r := e.waitStatus(t, e.submit(t, "x", 1), jobs.StatusFailed)
	if r.Error == nil || !strings.Contains(r.Error.Message, "post-processing: node watermark: text too long") || len(r.Images) != 0 {
		t.Fatalf("record %+v", r)
	}
	r = e.waitStatus(t, e.submit(t, "panic", 1), jobs.StatusFailed)
	if !strings.Contains(r.Error.Message, "panic: node bug") {
		t.Fatalf("error %+v", r.Error)
	}
}

func TestShutdownDrainsPostProcessing(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	inPost, release := make(chan struct{}), make(chan struct{})
	post := func(ctx context.Context, j *jobs.Job, imgs []image.Image) ([]image.Image, error) {
		close(inPost)
		<-release
		return imgs, nil
	}
	stop := run(t, e.worker(t, &testEngine{}, "w1", 30*time.Second, func(o *Options) { o.Post = post }))
	j := e.submit(t, "x", 1)
	<-inPost
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	time.Sleep(100 * time.Millisecond)
	select {
	case <-stopped:
		t.Fatal("the worker stopped with a job still post-processing")
	default:
	}
	close(release)
	<-stopped
	e.waitStatus(t, j, jobs.StatusSucceeded)
}
