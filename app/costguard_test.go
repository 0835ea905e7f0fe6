package app_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/server/config"
)

// TestCostGuard: on a CPU-only server a request estimated (at the measured
// speed) to run past max_cpu_job_time is refused with 422, the estimate
// and a suggestion that is itself accepted; small requests run.
func TestCostGuard(t *testing.T) {
	s := startServer(t, func(c *config.Config) { c.MaxCPUJobTime = config.Duration(time.Second) })
	s.waitJob("", s.submit("", tinyJob("measure")), "succeeded")
	deadline := time.Now().Add(30 * time.Second)
	for { // the worker's heartbeat reports the measured speed
		st := s.do("GET", "/v1/status", "", nil).json(t)
		w, _ := st["workers"].([]any)
		if len(w) == 1 {
			if sp, _ := w[0].(map[string]any)["speed"].(map[string]any); sp != nil && sp["tiny"] != nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no measured speed in /v1/status: %v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	big := map[string]any{"prompt": "huge", "width": 1024, "height": 1024, "steps": 60, "n": 4}
	r := s.do("POST", "/v1/jobs", "", big)
	m := r.json(t)["error"].(map[string]any)
	d, _ := m["details"].(map[string]any)
	if r.status != http.StatusUnprocessableEntity || m["code"] != "too_costly" || d == nil || d["estimate_s"].(float64) <= 1 ||
		d["limit_s"].(float64) != 1 || d["device"] != "cpu" || !strings.Contains(m["message"].(string), "max_cpu_job_time") {
		t.Fatalf("big job: %d %s", r.status, r.body)
	}
	sug := d["suggestion"].(map[string]any)
	if sug["estimate_s"].(float64) > 1 {
		t.Fatalf("suggestion does not fit: %v", sug)
	}
	for _, k := range []string{"width", "height", "steps", "n"} {
		big[k] = sug[k]
	}
	if r := s.do("POST", "/v1/jobs", "", big); r.status != http.StatusAccepted {
		t.Fatalf("the suggested request was refused: %d %s", r.status, r.body)
	}
	// The OpenAI route refuses in its own shape (a 4xx the SDKs do not retry).
	r = s.do("POST", "/v1/images/generations", "", map[string]any{"prompt": "huge", "size": "1024x1024", "steps": 60, "n": 4})
	if e := r.json(t)["error"].(map[string]any); r.status != http.StatusUnprocessableEntity || e["code"] != "too_costly" {
		t.Fatalf("OpenAI big job: %d %s", r.status, r.body)
	}
}
