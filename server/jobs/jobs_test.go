package jobs

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-project/kiln/server/broker"
)

func TestIDs(t *testing.T) {
	a := newIDAt(time.UnixMilli(1_700_000_000_000))
	b := newIDAt(time.UnixMilli(1_700_000_000_001))
	if !ValidID(a) || !ValidID(b) || a >= b {
		t.Fatalf("ids %s %s not valid and ordered", a, b)
	}
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewID()
		if seen[id] {
			t.Fatal("duplicate id")
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "short", "01m80xk54x7k4xb7aswca8e1pG", "01m80xk54x7k4xb7aswca8e1p-"} {
		if ValidID(bad) {
			t.Errorf("%q valid", bad)
		}
	}
	j, i, ok := ParseImageID(ImageID(a, 12))
	if !ok || j != a || i != 12 {
		t.Fatal("image id round trip")
	}
	for _, bad := range []string{a, a + "-", a + "-01", a + "-x", "x-1", a + "-1234"} {
		if _, _, ok := ParseImageID(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
	for s, want := range map[string]bool{"acme": true, "a-b_c9": true, "": false, "-a": false, "Acme": false, "a.b": false, "a b": false} {
		if ValidTenantID(s) != want {
			t.Errorf("ValidTenantID(%q) != %v", s, want)
		}
	}
}

func openStore(t *testing.T) (*Store, *broker.Broker) {
	t.Helper()
	ctx := context.Background()
	b, err := broker.Start(ctx, broker.Options{DataDir: filepath.Join(t.TempDir(), "d")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	s, err := Open(ctx, b.JS, Options{Attempts: 2, AckWait: time.Second, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return s, b
}

func newJob(tenant, priority string) *Job {
	return &Job{ID: NewID(), Tenant: tenant, Status: StatusQueued, CreatedAt: time.Now().UTC(),
		Params: Params{Model: "m", Prompt: "p", Width: 64, Height: 64, Steps: 1, N: 1, Priority: priority}}
}

func TestSubmitGetUpdateList(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	var ids []string
	for i := 0; i < 5; i++ {
		j := newJob("acme", PriorityNormal)
		if err := s.Submit(ctx, j); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
		time.Sleep(2 * time.Millisecond) // distinct millisecond timestamps
	}
	if err := s.Submit(ctx, newJob("other", PriorityHigh)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx, "other", ids[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("cross-tenant get: %v", err)
	}
	if _, err := s.Update(ctx, "acme", ids[1], func(j *Job) error { j.Status = StatusSucceeded; return nil }); err != nil {
		t.Fatal(err)
	}
	page, next, err := s.List(ctx, "acme", ListOptions{Limit: 2})
	if err != nil || len(page) != 2 || page[0].ID != ids[4] || page[1].ID != ids[3] || next != ids[3] {
		t.Fatalf("page 1: %v %s %v", page, next, err)
	}
	page, next, _ = s.List(ctx, "acme", ListOptions{Limit: 10, Before: next})
	if len(page) != 3 || next != "" {
		t.Fatalf("page 2: %d next %q", len(page), next)
	}
	page, _, _ = s.List(ctx, "acme", ListOptions{Limit: 10, Status: StatusSucceeded})
	if len(page) != 1 || page[0].ID != ids[1] {
		t.Fatalf("status filter: %v", page)
	}
	if page, _, _ := s.List(ctx, "nobody", ListOptions{Limit: 10}); len(page) != 0 {
		t.Fatal("empty tenant listed jobs")
	}
	waiting, _, err := s.QueueDepth(ctx)
	if err != nil || waiting != 6 {
		t.Fatalf("depth %d %v", waiting, err)
	}
}

func TestConcurrentUpdatesDoNotLoseWrites(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	j := newJob("acme", PriorityNormal)
	s.Submit(ctx, j)
	done := make(chan error)
	for i := 0; i < 8; i++ {
		go func() {
			_, err := s.Update(ctx, "acme", j.ID, func(r *Job) error { r.Attempts++; return nil })
			done <- err
		}()
	}
	for i := 0; i < 8; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	r, _, _ := s.Get(ctx, "acme", j.ID)
	if r.Attempts != 8 {
		t.Fatalf("attempts %d after 8 concurrent increments", r.Attempts)
	}
}

func TestReconcileReenqueuesLostJobs(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	j := newJob("acme", PriorityLow)
	j.CreatedAt = time.Now().Add(-time.Hour)
	if err := s.Submit(ctx, j); err != nil {
		t.Fatal(err)
	}
	// Take the message and acknowledge it without finishing the job, as a
	// store that lost the message would leave it. The acknowledgement must
	// be confirmed: a plain Ack is asynchronous, and under load the message
	// could still be in the stream when Reconcile looks.
	msg, err := mustLane(t, s, PriorityLow, "acme").Next()
	if err != nil {
		t.Fatal(err)
	}
	if err := msg.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Reconcile(ctx, time.Minute); err != nil || n != 1 {
		t.Fatalf("reconcile: %d %v", n, err)
	}
	if n, _ := s.Reconcile(ctx, time.Minute); n != 0 {
		t.Fatalf("second reconcile re-enqueued %d", n)
	}
	msg, err = mustLane(t, s, PriorityLow, "acme").Next()
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject() != QueueSubject(PriorityLow, "acme", j.ID) {
		t.Fatalf("subject %s", msg.Subject())
	}
	// Fresh jobs are left alone (their submission may be in progress).
	k := newJob("acme", PriorityLow)
	k.CreatedAt = time.Now()
	s.kv.Create(ctx, recordKey(k.Tenant, k.ID), []byte(`{"id":"`+k.ID+`","tenant":"acme","status":"queued","params":{"priority":"low"},"created_at":"`+k.CreatedAt.Format(time.RFC3339Nano)+`"}`))
	if n, _ := s.Reconcile(ctx, time.Minute); n != 0 {
		t.Fatal("fresh job re-enqueued")
	}
}

func TestImages(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	id := ImageID(NewID(), 0)
	if err := s.PutImage(ctx, "acme", id, []byte("png")); err != nil {
		t.Fatal(err)
	}
	if b, err := s.GetImage(ctx, "acme", id); err != nil || string(b) != "png" {
		t.Fatalf("get: %q %v", b, err)
	}
	for _, c := range [][2]string{{"other", id}, {"acme", "../acme/" + id}, {"acme", "init-x"}} {
		if _, err := s.GetImage(ctx, c[0], c[1]); !errors.Is(err, ErrNotFound) {
			t.Errorf("%v: %v", c, err)
		}
	}
	name, _ := s.PutUpload(ctx, "acme", "job1", []byte("init"))
	if _, err := s.GetUpload(ctx, "other", name); !errors.Is(err, ErrNotFound) {
		t.Fatal("cross-tenant upload read")
	}
}

// TestRepairOrphans: a job recorded as running by a worker that is gone
// (stopped or killed after taking it) goes back to queued with a queue
// message; a live worker's job and a fresh claim are left alone.
func TestRepairOrphans(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	old := time.Now().Add(-time.Hour)
	mk := func(worker string, started time.Time) *Job {
		j := newJob("acme", PriorityLow)
		if err := s.Submit(ctx, j); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Update(ctx, j.Tenant, j.ID, func(r *Job) error {
			r.Status, r.Worker, r.StartedAt, r.Attempts = StatusRunning, worker, &started, 1
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return j
	}
	gone := mk("gone", old)
	alive := mk("alive", old)
	fresh := mk("gone", time.Now())
	// The orphan's message was taken and acknowledged by its worker.
	for {
		msg, err := mustLane(t, s, PriorityLow, "acme").Next()
		if err != nil {
			t.Fatal(err)
		}
		if err := msg.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
		if msg.Subject() == QueueSubject(PriorityLow, "acme", gone.ID) {
			break
		}
	}
	live := func(w string) bool { return w == "alive" }
	if n, err := s.RepairOrphans(ctx, live, time.Minute); err != nil || n != 1 {
		t.Fatalf("repaired %d, %v", n, err)
	}
	r, _, _ := s.Get(ctx, "acme", gone.ID)
	if r.Status != StatusQueued || r.Worker != "" || r.StartedAt != nil || r.Attempts != 1 {
		t.Fatalf("repaired record %+v", r)
	}
	if _, err := s.stream.GetLastMsgForSubject(ctx, QueueSubject(PriorityLow, "acme", gone.ID)); err != nil {
		t.Fatalf("no queue message after repair: %v", err)
	}
	for _, j := range []*Job{alive, fresh} {
		if r, _, _ := s.Get(ctx, "acme", j.ID); r.Status != StatusRunning {
			t.Fatalf("left-alone job %s is %s", j.ID, r.Status)
		}
	}
	if n, _ := s.RepairOrphans(ctx, live, time.Minute); n != 0 {
		t.Fatalf("second pass repaired %d", n)
	}
}

func mustLane(t *testing.T, s *Store, priority, tenant string) jetstream.Consumer {
	t.Helper()
	c, err := s.LaneConsumer(context.Background(), priority, tenant)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
