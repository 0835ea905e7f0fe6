package app_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/internal/wasmbuild"
	"github.com/kiln-project/kiln/policies"
	"github.com/kiln-project/kiln/server/config"
)

const testAdminKey = "kilnadm_0123456789abcdefghijklmnopqrstuvwxyz"

// startAdminServer starts a server whose admin key is testAdminKey.
func startAdminServer(t *testing.T) *server {
	t.Helper()
	file := filepath.Join(t.TempDir(), "admin.key")
	if err := os.WriteFile(file, []byte(testAdminKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return startServer(t, func(c *config.Config) { c.AdminKeyFile = file; c.DefaultQuota.MaxPixels = 1 << 20 })
}

// adminRoutes returns every admin route with its parameters filled in.
func (s *server) adminRoutes(tenant string) [][2]string {
	var out [][2]string
	for _, r := range s.in.Routes() {
		if strings.HasPrefix(r.Path, "/v1/admin/") {
			p := strings.NewReplacer("{id}", tenant, "{key}", "nokey").Replace(r.Path)
			out = append(out, [2]string{r.Method, p})
		}
	}
	return out
}

// TestAdminAuthMatrix: every admin route refuses requests without a key
// (401), with a tenant key (403), with a revoked tenant key and with a
// replaced admin key (401), and serves the admin key.
func TestAdminAuthMatrix(t *testing.T) {
	s := startAdminServer(t)
	tenantKey := s.tenant("tenant-a", nil)
	routes := s.adminRoutes("tenant-a")
	if len(routes) < 10 {
		t.Fatalf("only %d admin routes", len(routes))
	}
	for _, r := range routes {
		if got := s.do(r[0], r[1], "", nil); got.status != http.StatusUnauthorized {
			t.Errorf("no key %s %s: %d %s", r[0], r[1], got.status, got.body)
		}
		if got := s.do(r[0], r[1], tenantKey, nil); got.status != http.StatusForbidden {
			t.Errorf("tenant key %s %s: %d %s", r[0], r[1], got.status, got.body)
		}
	}
	if r := s.do("GET", "/v1/admin/tenants", testAdminKey, nil); r.status != http.StatusOK {
		t.Fatalf("admin key: %d %s", r.status, r.body)
	}
	// A tenant key revoked: 401 like any unknown key.
	if r := s.do("DELETE", "/v1/admin/tenants/tenant-a", testAdminKey, nil); r.status != http.StatusOK || r.json(t)["revoked"] != true {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.do("GET", "/v1/admin/tenants", tenantKey, nil).status != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("revoked tenant key not refused with 401")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Rotating the admin key revokes the old one.
	r := s.do("POST", "/v1/admin/key/rotate", testAdminKey, nil)
	newKey, _ := r.json(t)["admin_key"].(string)
	if r.status != http.StatusOK || !strings.HasPrefix(newKey, "kilnadm_") {
		t.Fatalf("rotate: %d %s", r.status, r.body)
	}
	if r := s.do("GET", "/v1/admin/tenants", testAdminKey, nil); r.status != http.StatusUnauthorized {
		t.Fatalf("old admin key after rotation: %d", r.status)
	}
	if r := s.do("GET", "/v1/admin/tenants", newKey, nil); r.status != http.StatusOK {
		t.Fatalf("new admin key: %d", r.status)
	}
}

// TestAdminAPI: tenants, keys, quotas, weights and quality modes change
// over HTTP on a running server; operator policies upload with the admin
// key; workers drain and undrain; every change is in the audit log.
func TestAdminAPI(t *testing.T) {
	s := startAdminServer(t)
	r := s.do("POST", "/v1/admin/tenants", testAdminKey, map[string]any{"id": "acme", "weight": 3, "quality": "adaptive",
		"quota": map[string]any{"max_steps": 20}})
	m := r.json(t)
	key, _ := m["key"].(string)
	tn, _ := m["tenant"].(map[string]any)
	if r.status != http.StatusCreated || key == "" || tn["weight"].(float64) != 3 || tn["quality"] != "adaptive" || strings.Contains(string(r.body), "hash") ||
		tn["quota"].(map[string]any)["max_steps"].(float64) != 20 || len(tn["keys"].([]any)) != 1 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	if r := s.do("POST", "/v1/admin/tenants", testAdminKey, map[string]any{"id": "acme"}); r.status != http.StatusConflict {
		t.Fatalf("duplicate: %d %s", r.status, r.body)
	}
	if r := s.do("POST", "/v1/admin/tenants", testAdminKey, map[string]any{"id": "x", "weight": -1}); r.status != http.StatusBadRequest {
		t.Fatalf("bad weight: %d %s", r.status, r.body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.do("GET", "/v1/account", key, nil).status != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("the new tenant's key never worked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r = s.do("PATCH", "/v1/admin/tenants/acme", testAdminKey, map[string]any{"quota": map[string]any{"max_steps": 7}, "weight": 2})
	if r.status != http.StatusOK || r.json(t)["quota"].(map[string]any)["max_steps"].(float64) != 7 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	for {
		if a := s.do("GET", "/v1/account", key, nil).json(t); a["quota"].(map[string]any)["max_steps"].(float64) == 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("quota change never reached the gateway")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A second key, then revoke the first.
	r = s.do("POST", "/v1/admin/tenants/acme/keys", testAdminKey, nil)
	second, _ := r.json(t)["key"].(string)
	firstID := tn["keys"].([]any)[0].(map[string]any)["id"].(string)
	if r.status != http.StatusCreated || second == "" {
		t.Fatalf("new key: %d %s", r.status, r.body)
	}
	if r := s.do("DELETE", "/v1/admin/tenants/acme/keys/"+firstID, testAdminKey, nil); r.status != http.StatusOK {
		t.Fatalf("revoke key: %d %s", r.status, r.body)
	}
	for s.do("GET", "/v1/account", key, nil).status != http.StatusUnauthorized || s.do("GET", "/v1/account", second, nil).status != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("key revocation never took effect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := s.do("DELETE", "/v1/admin/tenants/nobody/keys/"+firstID, testAdminKey, nil); r.status != http.StatusNotFound {
		t.Fatalf("another tenant's key: %d", r.status)
	}

	// Profiles: an operator's profile serves jobs on every gateway until
	// it is deleted.
	prof := map[string]any{"description": "tiny and quick", "sampler": "euler", "steps": 2, "guidance": 5, "width": 64, "height": 64,
		"max_pixels": 65536, "max_steps": 4, "max_n": 2, "max_batch": 2, "precision": "fp32", "latency_target": 2.5, "quality": "adaptive"}
	if r := s.do("PUT", "/v1/admin/profiles/tiny_quick", testAdminKey, prof); r.status != http.StatusOK || r.json(t)["latency_target"].(float64) != 2.5 {
		t.Fatalf("put profile: %d %s", r.status, r.body)
	}
	prof["sampler"] = "nope"
	if r := s.do("PUT", "/v1/admin/profiles/bad", testAdminKey, prof); r.status != http.StatusBadRequest {
		t.Fatalf("bad sampler: %d %s", r.status, r.body)
	}
	j := s.waitJob(second, s.submit(second, map[string]any{"prompt": "quick", "profile": "tiny_quick"}), "succeeded")
	if p := j["params"].(map[string]any); p["steps"].(float64) != 2 || p["width"].(float64) != 64 {
		t.Fatalf("job of the operator's profile: %v", p)
	}
	if r := s.do("DELETE", "/v1/admin/profiles/tiny_quick", testAdminKey, nil); r.status != http.StatusNoContent {
		t.Fatalf("delete profile: %d %s", r.status, r.body)
	}
	if r := s.do("POST", "/v1/jobs", second, map[string]any{"prompt": "quick", "profile": "tiny_quick"}); r.status != http.StatusBadRequest {
		t.Fatalf("deleted profile still serves: %d %s", r.status, r.body)
	}
	if r := s.do("DELETE", "/v1/admin/profiles/balanced", testAdminKey, nil); r.status != http.StatusNotFound {
		t.Fatalf("deleting a configured profile: %d %s", r.status, r.body)
	}

	// Operator policies: the admin key uploads what tenants may not.
	if r := s.do("PUT", "/v1/policies/batching/ops", second, policies.Builtin()); r.status != http.StatusForbidden {
		t.Fatalf("tenant uploading a batching policy: %d %s", r.status, r.body)
	}
	if r := s.do("PUT", "/v1/policies/batching/ops", testAdminKey, wasmbuild.FirstJob()); r.status != http.StatusCreated {
		t.Fatalf("admin uploading a batching policy: %d %s", r.status, r.body)
	}

	// Drain the worker: a job waits; undrain: it runs.
	var worker string
	for worker == "" {
		if w, _ := s.do("GET", "/v1/admin/workers", testAdminKey, nil).json(t)["data"].([]any); len(w) == 1 {
			worker = w[0].(map[string]any)["id"].(string)
		} else if time.Now().After(deadline) {
			t.Fatal("no worker listed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := s.do("POST", "/v1/admin/workers/"+worker+"/drain", testAdminKey, nil); r.status != http.StatusOK || r.json(t)["draining"] != true {
		t.Fatalf("drain: %d %s", r.status, r.body)
	}
	if r := s.do("POST", "/v1/admin/workers/nope/drain", testAdminKey, nil); r.status != http.StatusNotFound {
		t.Fatalf("drain unknown worker: %d", r.status)
	}
	id := s.submit(second, map[string]any{"prompt": "held", "width": 64, "height": 64, "steps": 2})
	time.Sleep(1500 * time.Millisecond)
	if j := s.do("GET", "/v1/jobs/"+id, second, nil).json(t); j["status"] != "queued" {
		t.Fatalf("a drained worker took a job: %v", j["status"])
	}
	if r := s.do("POST", "/v1/admin/workers/"+worker+"/undrain", testAdminKey, nil); r.status != http.StatusOK || r.json(t)["draining"] == true {
		t.Fatalf("undrain: %d %s", r.status, r.body)
	}
	s.waitJob(second, id, "succeeded")

	// The audit log has who did what, including a refused attempt.
	s.do("DELETE", "/v1/admin/tenants/acme", "", nil)
	r = s.do("GET", "/v1/admin/audit?limit=50", testAdminKey, nil)
	var log struct {
		Data []struct {
			Actor, Action, Target string
			Status                int
			Time                  time.Time
		}
	}
	if err := json.Unmarshal(r.body, &log); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range log.Data {
		seen[e.Actor+" "+e.Action+" "+e.Target+" "+strings.TrimSpace(http.StatusText(e.Status))] = !e.Time.IsZero()
	}
	for _, want := range []string{"admin POST /v1/admin/tenants  Created", "admin PATCH /v1/admin/tenants/:id acme OK",
		"admin DELETE /v1/admin/tenants/:id/keys/:key acme/" + firstID + " OK", "admin PUT /v1/policies/:hook/:name batching/ops Created",
		"admin POST /v1/admin/workers/:id/drain " + worker + " OK", "admin PUT /v1/admin/profiles/:name tiny_quick OK", "unauthenticated DELETE /v1/admin/tenants/:id acme Unauthorized"} {
		if !seen[want] {
			t.Errorf("audit log lacks %q: %s", want, r.body)
		}
	}
}

// TestAdminKeyCreatedOnce: without a configured key one is made at the
// first start, logged once, and works; a restart keeps it and logs none.
func TestAdminKeyCreatedOnce(t *testing.T) {
	t.Setenv("KILN_ADMIN_KEY", "")
	var logs logBuffer
	dir := t.TempDir()
	s := startServerLog(t, func(c *config.Config) { c.DataDir = dir }, slog.New(slog.NewJSONHandler(&logs, nil)))
	var key string
	for _, m := range logs.records("admin key created for the admin API (/v1/admin, `kiln tenants --server`); it is shown only this once: store it, or set admin_key_file or KILN_ADMIN_KEY") {
		key, _ = m["admin_key"].(string)
	}
	if !strings.HasPrefix(key, "kilnadm_") {
		t.Fatal("no admin key logged at the first start")
	}
	if r := s.do("GET", "/v1/admin/tenants", key, nil); r.status != http.StatusOK {
		t.Fatalf("generated admin key: %d", r.status)
	}
	if err := s.in.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	var again logBuffer
	s2 := startServerLog(t, func(c *config.Config) { c.DataDir = dir }, slog.New(slog.NewJSONHandler(&again, nil)))
	if strings.Contains(again.buf.String(), "kilnadm_") {
		t.Fatal("the admin key was logged again")
	}
	if r := s2.do("GET", "/v1/admin/tenants", key, nil); r.status != http.StatusOK {
		t.Fatalf("admin key after restart: %d", r.status)
	}
}
