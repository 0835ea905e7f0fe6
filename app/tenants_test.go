package app_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/jobs"
)

// TestTenantIsolation: tenant B cannot see, fetch, cancel or subscribe to
// tenant A's jobs, images or events; every such attempt is a 404 (or a
// not_found WebSocket error), never a 403 that would confirm existence.
func TestTenantIsolation(t *testing.T) {
	s := startServer(t, nil)
	keyA := s.tenant("tenant-a", nil)
	keyB := s.tenant("tenant-b", nil)

	// B listens to everything of its own tenant.
	wsB := s.dial(t, keyB, "subscribe=all")
	defer wsB.close()

	idA := s.submit(keyA, tinyJob("secret of A"))
	doneA := s.waitJob(keyA, idA, "succeeded")
	imageURL := doneA["images"].([]any)[0].(map[string]any)["url"].(string)

	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/jobs/" + idA}, {"DELETE", "/v1/jobs/" + idA}, {"GET", imageURL},
	} {
		r := s.do(c.method, c.path, keyB, nil)
		if r.status != http.StatusNotFound || strings.Contains(string(r.body), "secret") {
			t.Errorf("B %s %s: %d %s", c.method, c.path, r.status, r.body)
		}
		if r := s.do(c.method, c.path, keyA, nil); c.method == "GET" && r.status != http.StatusOK {
			t.Errorf("A %s %s: %d", c.method, c.path, r.status)
		}
	}
	// The admin API is no way in: B's key is refused on every admin route,
	// A's tenant named or not.
	for _, r := range s.adminRoutes("tenant-a") {
		if got := s.do(r[0], r[1], keyB, nil); got.status != http.StatusForbidden || strings.Contains(string(got.body), "secret") {
			t.Errorf("B %s %s: %d %s", r[0], r[1], got.status, got.body)
		}
	}
	if l := s.do("GET", "/v1/jobs", keyB, nil).json(t); len(l["jobs"].([]any)) != 0 {
		t.Errorf("B lists A's jobs: %v", l)
	}
	// B subscribing to A's job by id gets not_found.
	wsB.send(t, map[string]any{"type": "subscribe", "jobs": []string{idA}})
	m := wsB.until(t, func(m map[string]any) bool { return m["type"] == "error" || m["type"] == "subscribed" })
	if m["type"] != "error" || m["error"].(map[string]any)["code"] != "not_found" {
		t.Fatalf("B subscribing to A's job: %v", m)
	}
	// B's subscription to all of its tenant saw nothing of A's job: ask for
	// a marker on B's own job and check no event about A arrived first.
	idB := s.submit(keyB, tinyJob("B's own"))
	for {
		m := wsB.next(t)
		if job, _ := m["job"].(string); job == idA {
			t.Fatalf("B received an event of A's job: %v", m)
		}
		if m["job"] == idB && m["type"] == "succeeded" {
			break
		}
	}
	// Keys are required once tenants exist; wrong and revoked keys fail.
	if r := s.do("GET", "/v1/jobs", "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("keyless with tenants: %d", r.status)
	}
	if r := s.do("GET", "/v1/jobs", keyA[:len(keyA)-1]+"x", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d", r.status)
	}
	if r := s.do("GET", "/v1/jobs", "kiln_garbage", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("garbage key: %d", r.status)
	}
	if err := s.in.Tenants().Revoke(context.Background(), "tenant-b"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.do("GET", "/v1/jobs", keyB, nil).status != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("revoked key still accepted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The WebSocket upgrade itself needs a valid key.
	_, resp, err := websocket.Dial(context.Background(), strings.Replace(s.base, "http", "ws", 1)+"/v1/ws", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("keyless WebSocket with tenants: %v %v", err, resp)
	}
}

func TestQuotas(t *testing.T) {
	s := startServer(t, func(c *config.Config) { c.Workers = 1 })
	key := s.tenant("small", func(q *config.Quota) {
		q.ConcurrentJobs, q.ImagesPerMinute, q.MaxSteps, q.MaxN, q.MaxPixels = 2, 5, 20, 3, 64*64
	})
	// Static limits are 400s naming the limit.
	for _, c := range []struct {
		body  map[string]any
		field string
		limit string
	}{
		{map[string]any{"prompt": "x", "width": 64, "height": 64, "steps": 21}, "steps", "max_steps=20"},
		{map[string]any{"prompt": "x", "width": 64, "height": 64, "n": 4, "steps": 2}, "n", "max_n=3"},
		{map[string]any{"prompt": "x", "width": 128, "height": 64, "steps": 2}, "width", "max_pixels=4096"},
	} {
		r := s.do("POST", "/v1/jobs", key, c.body)
		code, field := r.errField(t)
		if r.status != 400 || code != "limit_exceeded" || field != c.field || !strings.Contains(string(r.body), c.limit) {
			t.Errorf("%v: %d %s", c.body, r.status, r.body)
		}
	}
	// Two long jobs are live; a third is refused with Retry-After.
	long := func() map[string]any {
		return map[string]any{"prompt": "x", "width": 64, "height": 64, "steps": 20, "guidance": 5}
	}
	id1 := s.submit(key, long())
	id2 := s.submit(key, long())
	r := s.do("POST", "/v1/jobs", key, long())
	if code, _ := r.errField(t); r.status != http.StatusTooManyRequests || code != "too_many_jobs" || r.header.Get("Retry-After") == "" {
		t.Fatalf("third concurrent job: %d %s", r.status, r.body)
	}
	s.do("DELETE", "/v1/jobs/"+id1, key, nil)
	s.do("DELETE", "/v1/jobs/"+id2, key, nil)
	s.waitJob(key, id1, "canceled", "succeeded")
	s.waitJob(key, id2, "canceled", "succeeded")
	// 5 images per minute: 2 were spent; 3 more fit, the next does not.
	deadline := time.Now().Add(30 * time.Second)
	var id3 string
	for {
		r := s.do("POST", "/v1/jobs", key, map[string]any{"prompt": "x", "width": 64, "height": 64, "steps": 1, "n": 3})
		if r.status == http.StatusAccepted {
			id3 = r.json(t)["id"].(string)
			break
		}
		if code, _ := r.errField(t); code != "too_many_jobs" || time.Now().After(deadline) {
			t.Fatalf("n=3 within the rate: %d %s", r.status, r.body)
		}
		time.Sleep(20 * time.Millisecond) // the canceled jobs are still leaving the live set
	}
	s.waitJob(key, id3, "succeeded")
	// Three more images need 36 s of refill: refused however slow the machine.
	r = s.do("POST", "/v1/jobs", key, map[string]any{"prompt": "x", "width": 64, "height": 64, "steps": 1, "n": 3})
	if code, _ := r.errField(t); r.status != http.StatusTooManyRequests || code != "rate_limited" {
		t.Fatalf("over images_per_minute: %d %s", r.status, r.body)
	}
	if ra := r.header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Fatalf("Retry-After %q", ra)
	}
	// Raising the quota takes effect without a restart.
	if _, err := s.in.Tenants().SetQuota(context.Background(), "small", config.Quota{ConcurrentJobs: 2, ImagesPerMinute: 600,
		MaxPixels: 64 * 64, MaxSteps: 20, MaxN: 3}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for s.do("POST", "/v1/jobs", key, map[string]any{"prompt": "x", "width": 64, "height": 64, "steps": 1}).status != http.StatusAccepted {
		if time.Now().After(deadline) {
			t.Fatal("raised quota never applied")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRevocationFailsClosed: revoking the last tenant of a loopback server
// never reopens it — not at once, not after a restart — and /v1/status
// reports the mode (issue 24, fail-open after revocation).
func TestRevocationFailsClosed(t *testing.T) {
	s := startServer(t, nil)
	r := s.do("GET", "/v1/status", "sk-anything", nil)
	if r.status != http.StatusOK || r.json(t)["auth"].(map[string]any)["mode"] != "keyless" {
		t.Fatalf("fresh loopback status: %d %s", r.status, r.body)
	}
	key := s.tenant("only", nil)
	if r := s.do("GET", "/v1/status", key, nil); r.json(t)["auth"].(map[string]any)["mode"] != "keys" {
		t.Fatalf("status with a tenant: %s", r.body)
	}
	// A signed image URL issued before the revocation.
	r = s.do("POST", "/v1/images/generations", key, map[string]any{"prompt": "x", "size": "64x64", "steps": 2})
	if r.status != http.StatusOK {
		t.Fatalf("generations: %d %s", r.status, r.body)
	}
	link := r.json(t)["data"].([]any)[0].(map[string]any)["url"].(string)
	if resp, err := http.Get(link); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("signed url before revocation: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	if err := s.in.Tenants().Revoke(context.Background(), "only"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.do("GET", "/v1/account", key, nil).status != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("revoked key still accepted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	check := func(s *server) {
		t.Helper()
		for _, c := range []struct {
			method, path string
			body         any
		}{
			{"GET", "/v1/account", nil},
			{"POST", "/v1/jobs", tinyJob("x")},
			{"PUT", "/v1/policies/quality/q?mode=activate", []byte("\x00asm\x01\x00\x00\x00")},
			{"POST", "/v1/images/generations", map[string]any{"prompt": "x"}},
		} {
			for _, k := range []string{"", "sk-dummy"} {
				if r := s.do(c.method, c.path, k, c.body); r.status != http.StatusUnauthorized {
					t.Errorf("%s %s with key %q after revoking every tenant: %d %s", c.method, c.path, k, r.status, r.body)
				}
			}
		}
	}
	check(s)
	if resp, err := http.Get(link); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("signed url after revocation: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	dir := s.cfg.DataDir
	s.in.Stop(context.Background())
	s2 := startServer(t, func(c *config.Config) { c.DataDir = dir })
	check(s2)
}

// TestOrphanedRunningJobIsRequeued: a job recorded as running by a worker
// that no longer exists (stopped or killed after taking it) is put back to
// queued with a queue message, instead of showing "running" while no
// worker runs it (issue 24, stale job state after hand-back).
func TestOrphanedRunningJobIsRequeued(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		c.Role = config.RoleGateway // no worker: the job stays where the test puts it
		c.AckWait = config.Duration(time.Second)
	})
	id := s.submit("", tinyJob("orphan"))
	st := s.in.Jobs()
	ctx := context.Background()
	started := time.Now().Add(-time.Minute)
	if _, err := st.Update(ctx, "local", id, func(r *jobs.Job) error {
		r.Status, r.Worker, r.StartedAt, r.Attempts = jobs.StatusRunning, "gone-worker", &started, 1
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, _, err := st.Get(ctx, "local", id)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status == jobs.StatusQueued && r.Worker == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphaned job still %s by %q", r.Status, r.Worker)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
