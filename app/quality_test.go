package app_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-project/kiln/app"
	"github.com/kiln-project/kiln/gateway/api"
	"github.com/kiln-project/kiln/server/tenants"
)

// overload is a quality policy that behaves as under heavy load: it halves
// the steps and shrinks the width of everything it is asked about, and
// remembers what it saw.
type overload struct {
	mu   sync.Mutex
	seen []api.QualityInput
}

func (o *overload) Adjust(_ context.Context, in api.QualityInput) (api.QualityResult, error) {
	o.mu.Lock()
	o.seen = append(o.seen, in)
	o.mu.Unlock()
	p := in.Params
	p.Steps = max(1, p.Steps/2)
	p.Width = max(64, p.Width-64)
	return api.QualityResult{Params: p, Reason: "simulated overload"}, nil
}

func (o *overload) last() (api.QualityInput, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.seen) == 0 {
		return api.QualityInput{}, 0
	}
	return o.seen[len(o.seen)-1], len(o.seen)
}

// TestAdaptiveQualityIsOptInExplicitAndVisible: tenants that did not opt
// in are never adjusted; for one that did, parameters the request set
// survive overload unless it says allow_adjust, and every adjustment is
// recorded in the job, a response header, the WebSocket and /metrics; the
// policy sees the latency window of its (tenant, profile, model).
func TestAdaptiveQualityIsOptInExplicitAndVisible(t *testing.T) {
	pol := &overload{}
	s := startServerOpts(t, nil, app.Options{Quality: pol})
	plain := s.tenant("plain", nil)
	keen := s.tenant("keen", nil)
	adaptive := "adaptive"
	if _, err := s.in.Tenants().SetSettings(context.Background(), "keen", tenants.Settings{Quality: &adaptive}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for { // the gateway mirrors the change
		id := s.submit(keen, map[string]any{"prompt": "probe", "steps": 4, "width": 64, "height": 64})
		if _, n := pol.last(); n > 0 {
			s.waitJob(keen, id, "succeeded")
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the tenant's quality setting never reached the gateway")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Not opted in: untouched, the policy is not even asked.
	_, before := pol.last()
	id := s.submit(plain, map[string]any{"prompt": "plain", "width": 128, "height": 64, "allow_adjust": true, "steps": 4})
	if j := s.waitJob(plain, id, "succeeded"); j["adjustments"] != nil || j["params"].(map[string]any)["steps"].(float64) != 4 {
		t.Fatalf("a tenant that did not opt in was adjusted: %v", j)
	}
	if _, after := pol.last(); after != before {
		t.Fatal("the policy was asked about a tenant that did not opt in")
	}

	// Opted in, explicit parameters: they survive.
	r := s.do("POST", "/v1/jobs", keen, map[string]any{"prompt": "explicit", "width": 128, "height": 64, "steps": 4})
	m := r.json(t)
	if p := m["params"].(map[string]any); r.status != http.StatusAccepted || p["steps"].(float64) != 4 || p["width"].(float64) != 128 ||
		m["adjustments"] != nil || r.header.Get("Kiln-Adjusted") != "" {
		t.Fatalf("explicit parameters changed: %d %s", r.status, r.body)
	}
	in, _ := pol.last()
	if !in.Locked["steps"] || !in.Locked["width"] || !in.Locked["height"] || in.P95 <= 0 {
		t.Fatalf("policy input: locked %v, p95 %v (the probe job finished in the window)", in.Locked, in.P95)
	}

	// allow_adjust: adjusted, and it shows.
	ws := s.dial(t, keen, "subscribe=all")
	defer ws.close()
	r = s.do("POST", "/v1/jobs", keen, map[string]any{"prompt": "flexible", "width": 128, "height": 64, "steps": 4, "allow_adjust": true})
	m = r.json(t)
	adj, _ := m["adjustments"].([]any)
	if r.status != http.StatusAccepted || len(adj) != 2 || !strings.Contains(r.header.Get("Kiln-Adjusted"), "steps=4->2") ||
		!strings.Contains(r.header.Get("Kiln-Adjusted"), "width=128->64") {
		t.Fatalf("adjusted job: %d %s (Kiln-Adjusted %q)", r.status, r.body, r.header.Get("Kiln-Adjusted"))
	}
	first := adj[0].(map[string]any)
	if first["field"] != "steps" || first["from"].(float64) != 4 || first["to"].(float64) != 2 || first["reason"] != "simulated overload" {
		t.Fatalf("adjustment %v", first)
	}
	jobID := m["id"].(string)
	ev := ws.until(t, func(e map[string]any) bool { return e["job"] == jobID && e["type"] == "queued" })
	if a, _ := ev["adjustments"].([]any); len(a) != 2 {
		t.Fatalf("queued event without adjustments: %v", ev)
	}
	if j := s.waitJob(keen, jobID, "succeeded"); len(j["adjustments"].([]any)) != 2 {
		t.Fatalf("job record: %v", j)
	}
	metrics := string(s.do("GET", "/metrics", "", nil).body)
	if !strings.Contains(metrics, `kiln_quality_adjustments_total{field="steps"} 1`) ||
		!strings.Contains(metrics, `kiln_quality_adjustments_total{field="width"} 1`) {
		t.Fatal("no adjustment metric by field")
	}

	// The latency window is per profile: another profile starts empty.
	s.submit(keen, map[string]any{"prompt": "other profile", "profile": "speed_first", "width": 64, "height": 64, "steps": 2})
	if in, _ := pol.last(); in.P95 != 0 || in.Params.Profile != "speed_first" {
		t.Fatalf("speed_first saw p95 %v", in.P95)
	}
}
