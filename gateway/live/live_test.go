package live

import (
	"testing"

	"github.com/kiln-project/kiln/server/events"
)

func TestTrackerFollowsAJob(t *testing.T) {
	tr := New()
	ch, stop := tr.Subscribe("acme", 8)
	defer stop()
	other, stopOther := tr.Subscribe("other", 8)
	defer stopOther()

	tr.Event("acme", events.Event{Type: events.TypeStarted, Job: "j1"})
	tr.Event("acme", events.Event{Type: events.TypeProgress, Job: "j1", Step: 2, Steps: 10})
	tr.Preview("acme", events.Preview{Job: "j1", Step: 3, Steps: 10, Width: 64, Height: 64, JPEG: []byte{1, 2}})
	s, ok := tr.Get("acme", "j1")
	if !ok || s.Step != 3 || s.Steps != 10 || len(s.Preview) != 2 || s.PreviewWidth != 64 || s.Started.IsZero() {
		t.Fatalf("state %+v %v", s, ok)
	}
	if _, ok := tr.Get("other", "j1"); ok {
		t.Fatal("another tenant sees the job")
	}
	tr.Event("acme", events.Event{Type: events.TypeSucceeded, Job: "j1"})
	if _, ok := tr.Get("acme", "j1"); ok {
		t.Fatal("a finished job is still tracked")
	}
	if n := len(ch); n != 4 {
		t.Fatalf("subscriber got %d updates, want 4", n)
	}
	if len(other) != 0 {
		t.Fatal("another tenant's subscriber got updates")
	}
	stop()
	tr.Event("acme", events.Event{Type: events.TypeStarted, Job: "j2"})
	if len(ch) != 4 {
		t.Fatal("an ended subscription still receives")
	}
}

func TestTrackerIsBounded(t *testing.T) {
	tr := New()
	for i := range maxJobs + 10 {
		tr.Event("acme", events.Event{Type: events.TypeProgress, Job: string(rune('a'+i%26)) + string(rune(i)), Step: 1, Steps: 2})
	}
	if len(tr.jobs) > maxJobs {
		t.Fatalf("%d states kept", len(tr.jobs))
	}
}
