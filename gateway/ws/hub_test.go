package ws

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/server/broker"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/jobs"
)

// env is a hub behind an HTTP server whose requests name their tenant in
// the X-Tenant header (authentication is gateway/auth's, not tested here).
type env struct {
	hub   *Hub
	store *jobs.Store
	url   string
}

func newEnv(t *testing.T, o Options) *env {
	t.Helper()
	ctx := context.Background()
	b, err := broker.Start(ctx, broker.Options{DataDir: filepath.Join(t.TempDir(), "d")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	s, err := jobs.Open(ctx, b.JS, jobs.Options{Attempts: 2, AckWait: time.Second, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	o.Store = s
	h := New(o)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.Serve(w, r, auth.Principal{Tenant: r.Header.Get("X-Tenant")})
	}))
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return &env{hub: h, store: s, url: "ws" + strings.TrimPrefix(srv.URL, "http")}
}

type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func (e *env) dial(t *testing.T, tenant, query string) (*client, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, e.url+query, &websocket.DialOptions{
		Subprotocols: []string{auth.WSProtocol}, HTTPHeader: http.Header{"X-Tenant": {tenant}}})
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(8 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return &client{t: t, ws: c}, resp, nil
}

// next reads the next JSON message.
func (c *client) next() map[string]any {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, data, err := c.ws.Read(ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		return map[string]any{"type": "binary", "len": float64(len(data))}
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		c.t.Fatalf("message %s: %v", data, err)
	}
	return m
}

func (c *client) send(v any) {
	c.t.Helper()
	data, _ := json.Marshal(v)
	if err := c.ws.Write(context.Background(), websocket.MessageText, data); err != nil {
		c.t.Fatal(err)
	}
}

func submit(t *testing.T, s *jobs.Store, tenant string) *jobs.Job {
	t.Helper()
	j := &jobs.Job{ID: jobs.NewID(), Tenant: tenant, Status: jobs.StatusQueued, CreatedAt: time.Now().UTC(),
		Params: jobs.Params{Model: "m", Prompt: "p", Width: 64, Height: 64, Steps: 1, N: 1, Priority: jobs.PriorityNormal}}
	if err := s.Submit(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	return j
}

// Subscribing to a job gives a snapshot, then its events and previews;
// another tenant's socket never sees them; unsubscribing stops them.
func TestSubscribeEventsAndIsolation(t *testing.T) {
	e := newEnv(t, Options{Position: func(*jobs.Job) int { return 3 }})
	j := submit(t, e.store, "acme")
	a, _, err := e.dial(t, "acme", "")
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := e.dial(t, "other", "?subscribe=all")
	if err != nil {
		t.Fatal(err)
	}
	if m := a.next(); m["type"] != "hello" || m["tenant"] != "acme" || m["all"] != false {
		t.Fatalf("hello %v", m)
	}
	if m := other.next(); m["type"] != "hello" || m["all"] != true {
		t.Fatalf("other hello %v", m)
	}
	a.send(map[string]any{"type": "subscribe", "jobs": []string{j.ID, "missing"}})
	if m := a.next(); m["type"] != "queued" || m["job"] != j.ID || m["snapshot"] != true || m["position"] != float64(3) {
		t.Fatalf("snapshot %v", m)
	}
	if m := a.next(); m["type"] != "error" || m["job"] != "missing" {
		t.Fatalf("unknown job %v", m)
	}
	if m := a.next(); m["type"] != "subscribed" || len(m["jobs"].([]any)) != 1 {
		t.Fatalf("ack %v", m)
	}
	e.hub.PublishEvent("acme", events.Event{Type: events.TypeStarted, Job: j.ID})
	e.hub.PublishPreview("acme", j.ID, []byte{1, 2, 3})
	if m := a.next(); m["type"] != "started" {
		t.Fatalf("event %v", m)
	}
	if m := a.next(); m["type"] != "binary" || m["len"] != float64(3) {
		t.Fatalf("preview %v", m)
	}
	a.send(map[string]any{"type": "unsubscribe", "jobs": []string{j.ID}})
	if m := a.next(); m["type"] != "unsubscribed" {
		t.Fatalf("unsubscribe ack %v", m)
	}
	e.hub.PublishEvent("acme", events.Event{Type: events.TypeSucceeded, Job: j.ID})
	a.send(map[string]any{"type": "ping"})
	if m := a.next(); m["type"] != "pong" {
		t.Fatalf("after unsubscribing, got %v before the pong", m)
	}
	// The other tenant, subscribed to all of its own, saw none of it.
	other.send(map[string]any{"type": "ping"})
	if m := other.next(); m["type"] != "pong" {
		t.Fatalf("other tenant got %v", m)
	}
	other.send(map[string]any{"type": "subscribe", "jobs": []string{j.ID}})
	if m := other.next(); m["type"] != "error" || m["job"] != j.ID {
		t.Fatalf("another tenant's job: %v", m)
	}
}

func TestBadMessagesAreAnswered(t *testing.T) {
	e := newEnv(t, Options{})
	a, _, err := e.dial(t, "acme", "")
	if err != nil {
		t.Fatal(err)
	}
	a.next() // hello
	for _, msg := range []string{`{"type":"dance"}`, `not json`, `{"type":"subscribe","jobs":[` + strings.Repeat(`"x",`, MaxIDsPerMessage) + `"x"]}`} {
		if err := a.ws.Write(context.Background(), websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if m := a.next(); m["type"] != "error" {
			t.Fatalf("%s: %v", msg, m)
		}
	}
}

func TestConnectionLimitPerTenant(t *testing.T) {
	e := newEnv(t, Options{MaxPerTenant: 1})
	if _, _, err := e.dial(t, "acme", ""); err != nil {
		t.Fatal(err)
	}
	_, resp, err := e.dial(t, "acme", "")
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second socket: %v %v", resp, err)
	}
	if _, _, err := e.dial(t, "other", ""); err != nil {
		t.Fatalf("another tenant: %v", err)
	}
}

// A client that does not read is dropped, and the others keep going.
func TestSlowConsumerIsDropped(t *testing.T) {
	e := newEnv(t, Options{SendQueue: 4, WriteTimeout: 30 * time.Second})
	slow, _, err := e.dial(t, "acme", "?subscribe=all")
	if err != nil {
		t.Fatal(err)
	}
	_ = slow
	deadline := time.Now().Add(20 * time.Second)
	for e.hub.Count("acme") == 1 && time.Now().Before(deadline) {
		e.hub.PublishRaw("acme", "j", []byte(`{"type":"progress","pad":"`+strings.Repeat("x", 256<<10)+`"}`))
		time.Sleep(time.Millisecond)
	}
	if n := e.hub.Count("acme"); n != 0 {
		t.Fatalf("slow client still connected (%d)", n)
	}
	fast, _, err := e.dial(t, "acme", "")
	if err != nil {
		t.Fatal(err)
	}
	if m := fast.next(); m["type"] != "hello" {
		t.Fatalf("after dropping the slow client: %v", m)
	}
}
