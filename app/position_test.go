package app_test

import (
	"net/http"
	"testing"
)

// TestQueuePositions: queued jobs show how many jobs wait in front of them
// (higher priorities first, then in queue order) in GET /v1/jobs/{id}, in
// the GET /v1/jobs items and in WebSocket snapshots; the numbers move up
// as jobs ahead leave, and running or finished jobs carry none.
func TestQueuePositions(t *testing.T) {
	s := startDefault(t, nil)
	// A long job holds the only worker.
	long := s.submit("", map[string]any{"prompt": "a blue square", "steps": 150, "profile": "quality_first"})
	s.waitJob("", long, "running")
	small := func(prompt, priority string) string {
		return s.submit("", map[string]any{"prompt": prompt, "steps": 4, "priority": priority})
	}
	a := small("a red circle", "normal")
	b := small("a green triangle", "low")
	c := small("a yellow star", "normal")
	d := small("a white square", "high")
	position := func(id string) any {
		t.Helper()
		r := s.do("GET", "/v1/jobs/"+id, "", nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", id, r.status, r.body)
		}
		return r.json(t)["position"]
	}
	want := map[string]any{long: nil, d: 0.0, a: 1.0, c: 2.0, b: 3.0}
	for id, w := range want {
		if got := position(id); got != w {
			t.Errorf("job %s: position %v, want %v", id, got, w)
		}
	}
	list := s.do("GET", "/v1/jobs?limit=10", "", nil).json(t)["jobs"].([]any)
	if len(list) != 5 {
		t.Fatalf("%d jobs listed", len(list))
	}
	for _, it := range list {
		j := it.(map[string]any)
		if got := j["position"]; got != want[j["id"].(string)] {
			t.Errorf("listed job %s (%s): position %v, want %v", j["id"], j["status"], got, want[j["id"].(string)])
		}
	}
	w := s.dial(t, "", "")
	defer w.close()
	w.send(t, map[string]any{"type": "subscribe", "jobs": []string{c}, "previews": false})
	if m := w.until(t, func(m map[string]any) bool { return m["job"] == c }); m["type"] != "queued" || m["position"] != 2.0 {
		t.Fatalf("snapshot of a queued job: %v", m)
	}

	// Jobs ahead leave: the ones behind move up.
	if r := s.do("DELETE", "/v1/jobs/"+a, "", nil); r.status != http.StatusOK {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	s.waitJob("", a, "canceled")
	if got := position(c); got != 1.0 {
		t.Errorf("after canceling a job ahead: position %v, want 1", got)
	}
	if got := position(a); got != nil {
		t.Errorf("canceled job has position %v", got)
	}
	s.do("DELETE", "/v1/jobs/"+long, "", nil)
	for _, id := range []string{d, c, b} {
		s.waitJob("", id, "succeeded")
		if got := position(id); got != nil {
			t.Errorf("finished job %s has position %v", id, got)
		}
	}
}
