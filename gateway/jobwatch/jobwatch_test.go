package jobwatch

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kiln-project/kiln/server/broker"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/jobs"
)

type recorder struct {
	mu   sync.Mutex
	evs  []events.Event
	live map[string]bool
}

func (r *recorder) emit(tenant string, ev events.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if tenant == "acme" {
		r.evs = append(r.evs, ev)
	}
}

func (r *recorder) setLive(tenant, id string, live bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live[tenant+"/"+id] = live
}

// waitFor polls until cond holds (the watch delivers asynchronously).
func (r *recorder) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; events %+v", what, r.evs)
}

func setup(t *testing.T) (*jobs.Store, *Watcher, *recorder) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b, err := broker.Start(ctx, broker.Options{DataDir: filepath.Join(t.TempDir(), "d")})
	if err != nil {
		t.Fatal(err)
	}
	s, err := jobs.Open(ctx, b.JS, jobs.Options{Attempts: 2, AckWait: time.Second, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{live: map[string]bool{}}
	w := New(Options{Store: s, Live: rec.setLive, Emit: rec.emit})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		b.Close()
	})
	select {
	case <-w.Synced():
	case <-time.After(20 * time.Second):
		t.Fatal("watcher never synced")
	}
	return s, w, rec
}

func job(tenant, priority string) *jobs.Job {
	return &jobs.Job{ID: jobs.NewID(), Tenant: tenant, Status: jobs.StatusQueued, CreatedAt: time.Now().UTC(),
		Params: jobs.Params{Model: "m", Prompt: "p", Width: 64, Height: 64, Steps: 4, N: 1, Priority: priority}}
}

// A job's life becomes queued → started → succeeded events for its tenant
// only, live counts follow it, and Wait returns the final record.
func TestEventsLiveAndWait(t *testing.T) {
	s, w, rec := setup(t)
	ctx := context.Background()
	other := job("other", jobs.PriorityNormal)
	if err := s.Submit(ctx, other); err != nil {
		t.Fatal(err)
	}
	j := job("acme", jobs.PriorityNormal)
	if err := s.Submit(ctx, j); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "queued", func() bool { return len(rec.evs) == 1 })
	if ev := rec.evs[0]; ev.Type != events.TypeQueued || ev.Job != j.ID || ev.Position == nil || *ev.Position != 1 {
		t.Fatalf("queued event %+v (position behind the other tenant's job: 1)", ev)
	}
	waited := make(chan *jobs.Job, 1)
	go func() {
		r, err := w.Wait(ctx, "acme", j.ID)
		if err != nil {
			t.Error(err)
		}
		waited <- r
	}()
	if _, err := s.Update(ctx, "acme", j.ID, func(r *jobs.Job) error {
		r.Status, r.Worker, r.Attempts = jobs.StatusRunning, "w1", 1
		now := time.Now().UTC()
		r.StartedAt = &now
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "started", func() bool { return len(rec.evs) == 2 })
	if ev := rec.evs[1]; ev.Type != events.TypeStarted || ev.Worker != "w1" || ev.Steps != 4 {
		t.Fatalf("started event %+v", ev)
	}
	if _, err := s.Update(ctx, "acme", j.ID, func(r *jobs.Job) error {
		r.Status = jobs.StatusSucceeded
		r.Images = []jobs.Image{{ID: jobs.ImageID(r.ID, 0), Seed: 7, Width: 64, Height: 64}}
		now := time.Now().UTC()
		r.FinishedAt = &now
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "succeeded", func() bool { return len(rec.evs) == 3 })
	if ev := rec.evs[2]; ev.Type != events.TypeSucceeded || len(ev.Images) != 1 || ev.Images[0].URL != ImageURL(jobs.ImageID(j.ID, 0)) || ev.Duration < 0 {
		t.Fatalf("succeeded event %+v", ev)
	}
	select {
	case r := <-waited:
		if r == nil || r.Status != jobs.StatusSucceeded {
			t.Fatalf("Wait returned %+v", r)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Wait did not return")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.live["acme/"+j.ID] || !rec.live["other/"+other.ID] {
		t.Fatalf("live %v", rec.live)
	}
	if r, err := w.Wait(ctx, "acme", j.ID); err != nil || r.Status != jobs.StatusSucceeded {
		t.Fatalf("Wait on a finished job: %+v %v", r, err)
	}
}

// Queue positions count every tenant's jobs ahead: higher priority first,
// then the order they were queued.
func TestPositions(t *testing.T) {
	s, w, rec := setup(t)
	ctx := context.Background()
	low := job("acme", jobs.PriorityLow)
	normal := job("other", jobs.PriorityNormal)
	normal2 := job("acme", jobs.PriorityNormal)
	high := job("acme", jobs.PriorityHigh)
	for _, j := range []*jobs.Job{low, normal, normal2, high} {
		if err := s.Submit(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	rec.waitFor(t, "three queued events", func() bool { return len(rec.evs) == 3 })
	want := map[string]int{high.ID: 0, normal2.ID: 2, low.ID: 3}
	got := w.Positions("acme")
	if len(got) != len(want) {
		t.Fatalf("positions %v, want %v", got, want)
	}
	for id, p := range want {
		if got[id] != p || w.Position("acme", id, "") != p {
			t.Fatalf("positions %v, want %v (Position %d)", got, want, w.Position("acme", id, ""))
		}
	}
	if p := w.Position("acme", "unseen", jobs.PriorityNormal); p != 3 {
		t.Fatalf("an unseen normal job waits behind %d, want 3 (the newest normal)", p)
	}
}

func TestEventOf(t *testing.T) {
	j := job("acme", jobs.PriorityNormal)
	j.Status = jobs.StatusFailed
	j.Error = &jobs.Error{Code: "engine", Message: "boom"}
	if ev, ok := EventOf(j); !ok || ev.Type != events.TypeFailed || ev.Error == nil || ev.Error.Message != "boom" {
		t.Fatalf("failed: %+v %v", ev, ok)
	}
	j.Status = jobs.StatusCanceled
	if ev, ok := EventOf(j); !ok || ev.Type != events.TypeCanceled {
		t.Fatalf("canceled: %+v", ev)
	}
	j.Status = "weird"
	if _, ok := EventOf(j); ok {
		t.Fatal("an unknown status made an event")
	}
}
