package app_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/server/config"
)

// records returns the JSON log records with msg.
func (l *logBuffer) records(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// TestErrorShapesAndAccessLog: unknown paths and methods get the API's
// error body (405 with the allowed methods), durations are seconds, and
// every request leaves one access-log line naming its job.
func TestErrorShapesAndAccessLog(t *testing.T) {
	var logs logBuffer
	s := startServerLog(t, nil, slog.New(slog.NewJSONHandler(&logs, nil)))

	for _, c := range []struct{ method, path string }{{"GET", "/v1/nope"}, {"POST", "/v1/nope"}, {"GET", "/v1/jobs/x/y"}} {
		r := s.do(c.method, c.path, "", nil)
		if code, _ := r.errField(t); r.status != http.StatusNotFound || code != "not_found" {
			t.Errorf("%s %s: %d %s", c.method, c.path, r.status, r.body)
		}
	}
	r := s.do("DELETE", "/v1/jobs", "", nil)
	e, _ := r.json(t)["error"].(map[string]any)
	if r.status != http.StatusMethodNotAllowed || e == nil || e["code"] != "method_not_allowed" ||
		r.header.Get("Allow") != "GET, POST" || len(e["allowed"].([]any)) != 2 {
		t.Errorf("DELETE /v1/jobs: %d %s (Allow %q)", r.status, r.body, r.header.Get("Allow"))
	}
	// The OpenAI route answers in OpenAI's shape.
	r = s.do("PUT", "/v1/images/generations", "", nil)
	if e, _ := r.json(t)["error"].(map[string]any); r.status != http.StatusMethodNotAllowed || e["type"] != "invalid_request_error" ||
		r.header.Get("Allow") != "POST" {
		t.Errorf("PUT /v1/images/generations: %d %s", r.status, r.body)
	}

	// Durations are seconds.
	p := s.do("GET", "/v1/profiles", "", nil).json(t)
	for _, x := range p["data"].([]any) {
		if lt, ok := x.(map[string]any)["latency_target"].(float64); !ok || lt <= 0 || lt > 3600 {
			t.Errorf("latency_target %v is not seconds", x.(map[string]any)["latency_target"])
		}
	}

	cr := s.do("POST", "/v1/jobs", "", tinyJob("logged"))
	id := cr.json(t)["id"].(string)
	if cr.header.Get("Kiln-Job-Id") != id {
		t.Errorf("Kiln-Job-Id %q, want %q", cr.header.Get("Kiln-Job-Id"), id)
	}
	s.waitJob("", id, "succeeded")
	deadline := time.Now().Add(5 * time.Second)
	for {
		var post, get, notFound bool
		for _, m := range logs.records("request") {
			lat, ok := m["latency_s"].(float64)
			if !ok || lat < 0 || lat > 60 {
				t.Fatalf("access log without a latency in seconds: %v", m)
			}
			switch {
			case m["method"] == "POST" && m["route"] == "/v1/jobs" && m["status"] == 202.0 && m["tenant"] == "local" && m["job"] == id:
				post = true
			case m["method"] == "GET" && m["route"] == "/v1/jobs/:id" && m["status"] == 200.0 && m["job"] == id:
				get = true
			case m["path"] == "/v1/nope" && m["status"] == 404.0:
				notFound = true
			}
		}
		if post && get && notFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log lines missing (post %v, get %v, 404 %v)", post, get, notFound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSyncTimeoutSaysHowToPoll: an OpenAI request that outlives
// sync_timeout gets a 504 naming its job and how to poll it, and the job
// goes on to finish.
func TestSyncTimeoutSaysHowToPoll(t *testing.T) {
	s := startServer(t, func(c *config.Config) { c.SyncTimeout = config.Duration(time.Nanosecond) })
	r := s.do("POST", "/v1/images/generations", "", map[string]any{"prompt": "slow", "size": "64x64", "steps": 2})
	id := r.header.Get("Kiln-Job-Id")
	e, _ := r.json(t)["error"].(map[string]any)
	if r.status != http.StatusGatewayTimeout || id == "" || r.header.Get("Location") != "/v1/jobs/"+id || r.header.Get("X-Should-Retry") != "false" ||
		!strings.Contains(e["message"].(string), "GET /v1/jobs/"+id) {
		t.Fatalf("timeout response %d %s (job %q)", r.status, r.body, id)
	}
	s.waitJob("", id, "succeeded")
}
