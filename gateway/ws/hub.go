// Package ws is the WebSocket hub behind GET /v1/ws: clients subscribe to
// their own jobs (or all of their tenant's) and receive JSON events and
// binary preview frames, fanned out to every subscriber of the tenant, and
// periodic metrics. Each connection has a bounded send queue; a client that
// does not keep up is dropped with close code 4008 rather than stalling
// anyone else. The protocol is documented in docs/websocket.md.
package ws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/gateway/jobwatch"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/server/metrics"
)

// Close codes (4000-4999 are application codes).
const (
	// CloseSlowConsumer: the client did not read fast enough.
	CloseSlowConsumer websocket.StatusCode = 4008
	// CloseBadMessage: the client sent something that is not a valid message.
	CloseBadMessage websocket.StatusCode = 4000
)

// Limits of the client side of the protocol. A message over
// MaxClientMessage closes the socket with 1009 (message too big).
const (
	MaxClientMessage = 64 << 10
	// MaxIDsPerMessage bounds the job ids of one subscribe or unsubscribe;
	// a message with more is refused whole.
	MaxIDsPerMessage = 100
	// MaxJobsPerConn bounds the jobs one socket is subscribed to.
	MaxJobsPerConn = 1000
	// Client messages are rate-limited per socket (token bucket); messages
	// over the rate are answered with rate_limited and not acted on.
	messagesPerSecond = 20
	messageBurst      = 50
	// Log lines about one client are rate-limited too; the rest are
	// counted in kiln_log_lines_suppressed_total{source="websocket"}.
	logLinesPerSecond = 1
	logLineBurst      = 5
)

// Options configure a Hub.
type Options struct {
	Store *jobs.Store
	// MaxPerTenant bounds open connections per tenant.
	MaxPerTenant int
	// SendQueue is each connection's queue of outgoing messages.
	SendQueue int
	// WriteTimeout bounds one write; a client that stalls longer is dropped.
	WriteTimeout time.Duration
	// OriginPatterns are the cross-origin hosts allowed to connect
	// (same-origin is always allowed).
	OriginPatterns []string
	// MetricsInterval is announced in the hello message.
	MetricsInterval time.Duration
	// Position gives a queued job's queue position for subscription
	// snapshots (nil: snapshots carry none).
	Position func(j *jobs.Job) int
	Registry *metrics.Registry
	Logger   *slog.Logger
}

// Hub tracks connections by tenant.
type Hub struct {
	o      Options
	log    *slog.Logger
	mu     sync.Mutex
	conns  map[string]map[*conn]struct{}
	closed bool

	open       *metrics.Gauge
	dropped    *metrics.CounterVec
	sent       *metrics.CounterVec
	suppressed *metrics.CounterVec
}

// New returns a hub.
func New(o Options) *Hub {
	if o.SendQueue <= 0 {
		o.SendQueue = 256
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.MaxPerTenant <= 0 {
		o.MaxPerTenant = 16
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = metrics.NewRegistry()
	}
	return &Hub{o: o, log: o.Logger, conns: map[string]map[*conn]struct{}{},
		open:    o.Registry.NewGauge("kiln_websocket_connections", "Open WebSocket connections."),
		dropped: o.Registry.NewCounterVec("kiln_websocket_closed_total", "WebSocket connections closed, by reason.", "reason"),
		sent:    o.Registry.NewCounterVec("kiln_websocket_messages_total", "Messages sent on WebSockets, by kind.", "kind"),
		suppressed: o.Registry.NewCounterVec("kiln_log_lines_suppressed_total",
			"Log lines not written because their client exceeded its log rate, by source.", "source"),
	}
}

type frame struct {
	typ  websocket.MessageType
	data []byte
}

type conn struct {
	hub     *Hub
	ws      *websocket.Conn
	tenant  string
	send    chan frame
	ctx     context.Context
	cancel  context.CancelFunc
	once    sync.Once
	closing atomic.Bool

	mu       sync.Mutex
	all      bool
	jobs     map[string]bool
	previews bool

	msgs tokenBucket // client messages (reader goroutine only)
	logs tokenBucket // log lines about this client (guarded by mu)
}

// tokenBucket is a rate limiter: rate tokens a second up to burst.
type tokenBucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func newBucket(rate, burst float64) tokenBucket {
	return tokenBucket{rate: rate, burst: burst, tokens: burst}
}

func (b *tokenBucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// warn logs a line about this client within its log rate; lines over it
// are counted, not written.
func (c *conn) warn(msg string, args ...any) {
	c.mu.Lock()
	ok := c.logs.take(time.Now())
	c.mu.Unlock()
	if !ok {
		c.hub.suppressed.With("websocket").Inc()
		return
	}
	c.hub.log.Warn(msg, append([]any{"tenant", c.tenant}, args...)...)
}

// Count returns the open connections of a tenant.
func (h *Hub) Count(tenant string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns[tenant])
}

// Serve upgrades the request and runs the connection until it ends.
func (h *Hub) Serve(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		apierr.Write(w, apierr.New(http.StatusServiceUnavailable, apierr.CodeUnavailable, "", "server is shutting down"))
		return
	}
	if n := len(h.conns[p.Tenant]); n >= h.o.MaxPerTenant {
		h.mu.Unlock()
		apierr.Write(w, apierr.TooMany(apierr.CodeConcurrency, 5*time.Second,
			"the tenant has %d open WebSockets, the limit max_websockets_per_tenant is %d", n, h.o.MaxPerTenant))
		return
	}
	// Reserve the slot before the upgrade so concurrent upgrades count.
	c := &conn{hub: h, tenant: p.Tenant, send: make(chan frame, h.o.SendQueue), jobs: map[string]bool{}, previews: true,
		msgs: newBucket(messagesPerSecond, messageBurst), logs: newBucket(logLinesPerSecond, logLineBurst)}
	if h.conns[p.Tenant] == nil {
		h.conns[p.Tenant] = map[*conn]struct{}{}
	}
	h.conns[p.Tenant][c] = struct{}{}
	h.mu.Unlock()

	wsc, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:   []string{auth.WSProtocol},
		OriginPatterns: h.o.OriginPatterns,
	})
	if err != nil {
		h.remove(c)
		return // Accept wrote the HTTP error
	}
	wsc.SetReadLimit(MaxClientMessage)
	all := r.URL.Query().Get("subscribe") == "all"
	ctx, cancel := context.WithCancel(context.Background())
	h.mu.Lock()
	c.ws, c.ctx, c.cancel, c.all = wsc, ctx, cancel, all
	h.mu.Unlock()
	h.open.Add(1)

	hello, _ := json.Marshal(map[string]any{
		"type": "hello", "protocol": auth.WSProtocol, "tenant": p.Tenant,
		"metrics_interval_ms": h.o.MetricsInterval.Milliseconds(), "send_queue": h.o.SendQueue, "all": all,
	})
	c.enqueue(frame{websocket.MessageText, hello}, "hello")

	done := make(chan struct{})
	go func() { c.writer(); close(done) }()
	c.reader()
	c.shutdown(websocket.StatusNormalClosure, "", "client")
	<-done
}

func (h *Hub) remove(c *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if set := h.conns[c.tenant]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(h.conns, c.tenant)
		}
	}
}

// shutdown ends a connection once: the writer stops taking frames, the
// socket is closed with code and reason (the close frame waits up to 5 s
// for a write in progress, so that even a slow client that resumes reading
// learns why), and the connection is forgotten.
func (c *conn) shutdown(code websocket.StatusCode, reason, why string) {
	c.once.Do(func() {
		c.hub.remove(c)
		c.hub.open.Add(-1)
		c.hub.dropped.With(why).Inc()
		c.closing.Store(true)
		go func() {
			if err := c.ws.Close(code, reason); err != nil {
				_ = c.ws.CloseNow()
			}
			c.cancel()
		}()
	})
}

// enqueue queues a message without blocking; a full queue drops the
// client as slow. Nothing is queued (or logged) once the socket closes.
func (c *conn) enqueue(f frame, kind string) {
	if c.closing.Load() {
		return
	}
	select {
	case c.send <- f:
		c.hub.sent.With(kind).Inc()
	default:
		c.warn("dropping slow WebSocket client")
		c.shutdown(CloseSlowConsumer, "slow consumer", "slow")
	}
}

func (c *conn) writer() {
	for {
		select {
		case <-c.ctx.Done():
			return
		case f := <-c.send:
			if c.closing.Load() {
				return
			}
			ctx, cancel := context.WithTimeout(c.ctx, c.hub.o.WriteTimeout)
			err := c.ws.Write(ctx, f.typ, f.data)
			cancel()
			if err != nil {
				if c.ctx.Err() == nil && !c.closing.Load() {
					c.shutdown(CloseSlowConsumer, "write timed out", "write_error")
				}
				return
			}
		}
	}
}

// clientMessage is what clients send.
type clientMessage struct {
	Type     string   `json:"type"`
	Jobs     []string `json:"jobs"`
	All      *bool    `json:"all"`
	Previews *bool    `json:"previews"`
}

func (c *conn) reader() {
	for {
		typ, data, err := c.ws.Read(c.ctx)
		if err != nil {
			if errors.Is(err, websocket.ErrMessageTooBig) {
				c.warn("WebSocket message over the read limit", "limit", MaxClientMessage)
				c.shutdown(websocket.StatusMessageTooBig, "message too big", "too_big")
			}
			return
		}
		if c.closing.Load() {
			return
		}
		if !c.msgs.take(time.Now()) {
			c.replyError("", apierr.CodeRateLimited, "too many messages; slow down")
			continue
		}
		if typ != websocket.MessageText {
			c.replyError("", apierr.CodeInvalid, "binary messages are not accepted")
			continue
		}
		var m clientMessage
		if err := json.Unmarshal(data, &m); err != nil {
			c.replyError("", apierr.CodeInvalid, "message is not a JSON object: "+err.Error())
			continue
		}
		if len(m.Jobs) > MaxIDsPerMessage {
			c.replyError("", apierr.CodeLimit, fmt.Sprintf("%d job ids in one message; the limit is %d", len(m.Jobs), MaxIDsPerMessage))
			continue
		}
		switch m.Type {
		case "subscribe":
			c.subscribe(m)
		case "unsubscribe":
			c.unsubscribe(m)
		case "ping":
			pong, _ := json.Marshal(map[string]any{"type": "pong", "time": time.Now().UTC()})
			c.enqueue(frame{websocket.MessageText, pong}, "pong")
		default:
			c.replyError("", apierr.CodeInvalid, "unknown message type "+quote(m.Type)+"; use subscribe, unsubscribe or ping")
		}
	}
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

func (c *conn) replyError(job, code, msg string) {
	data, _ := json.Marshal(map[string]any{"type": "error", "job": job, "error": map[string]string{"code": code, "message": msg}})
	c.enqueue(frame{websocket.MessageText, data}, "error")
}

func (c *conn) subscribe(m clientMessage) {
	if m.Previews != nil {
		c.mu.Lock()
		c.previews = *m.Previews
		c.mu.Unlock()
	}
	if m.All != nil && *m.All {
		c.mu.Lock()
		c.all = true
		c.mu.Unlock()
	}
	var accepted []string
	for _, id := range m.Jobs {
		c.mu.Lock()
		full := len(c.jobs) >= MaxJobsPerConn && !c.jobs[id]
		c.mu.Unlock()
		if full {
			c.replyError(id, apierr.CodeLimit, fmt.Sprintf("this socket is subscribed to %d jobs, the limit", MaxJobsPerConn))
			break
		}
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		j, _, err := c.hub.o.Store.Get(ctx, c.tenant, id)
		cancel()
		if errors.Is(err, jobs.ErrNotFound) {
			c.replyError(id, apierr.CodeNotFound, "job "+quote(id)+" not found")
			continue
		}
		if err != nil {
			c.replyError(id, apierr.CodeUnavailable, "could not read the job; retry")
			continue
		}
		c.mu.Lock()
		c.jobs[id] = true
		c.mu.Unlock()
		accepted = append(accepted, id)
		// Tell the subscriber where the job stands now.
		if ev, ok := jobwatch.EventOf(j); ok {
			ev.Snapshot = true
			if ev.Type == events.TypeQueued && c.hub.o.Position != nil {
				pos := c.hub.o.Position(j)
				ev.Position = &pos
			}
			if data, err := json.Marshal(ev); err == nil {
				c.enqueue(frame{websocket.MessageText, data}, "event")
			}
		}
	}
	c.mu.Lock()
	all, previews := c.all, c.previews
	c.mu.Unlock()
	ack, _ := json.Marshal(map[string]any{"type": "subscribed", "jobs": nonNil(accepted), "all": all, "previews": previews})
	c.enqueue(frame{websocket.MessageText, ack}, "ack")
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (c *conn) unsubscribe(m clientMessage) {
	c.mu.Lock()
	if m.All != nil && *m.All {
		c.all = false
	}
	for _, id := range m.Jobs {
		delete(c.jobs, id)
	}
	all := c.all
	c.mu.Unlock()
	ack, _ := json.Marshal(map[string]any{"type": "unsubscribed", "jobs": nonNil(m.Jobs), "all": all})
	c.enqueue(frame{websocket.MessageText, ack}, "ack")
}

func (c *conn) wants(job string, preview bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if preview && !c.previews {
		return false
	}
	return c.all || c.jobs[job]
}

func (h *Hub) tenantConns(tenant string) []*conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.conns[tenant]
	out := make([]*conn, 0, len(set))
	for c := range set {
		if c.ws != nil {
			out = append(out, c)
		}
	}
	return out
}

// PublishEvent sends a job event to the tenant's subscribers of that job.
func (h *Hub) PublishEvent(tenant string, ev events.Event) {
	data, err := json.Marshal(ev)
	if err != nil {
		return
	}
	h.PublishRaw(tenant, ev.Job, data)
}

// PublishRaw sends an already encoded JSON event about a job.
func (h *Hub) PublishRaw(tenant, job string, data []byte) {
	for _, c := range h.tenantConns(tenant) {
		if c.wants(job, false) {
			c.enqueue(frame{websocket.MessageText, data}, "event")
		}
	}
}

// PublishPreview sends a binary preview frame to the job's subscribers.
func (h *Hub) PublishPreview(tenant, job string, data []byte) {
	for _, c := range h.tenantConns(tenant) {
		if c.wants(job, true) {
			c.enqueue(frame{websocket.MessageBinary, data}, "preview")
		}
	}
}

// Broadcast sends a JSON message to every connection (metrics).
func (h *Hub) Broadcast(v any) {
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	h.mu.Lock()
	var all []*conn
	for _, set := range h.conns {
		for c := range set {
			if c.ws != nil {
				all = append(all, c)
			}
		}
	}
	h.mu.Unlock()
	for _, c := range all {
		c.enqueue(frame{websocket.MessageText, data}, "metrics")
	}
}

// Close ends every connection with 1001 (going away) and refuses new ones.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	var all []*conn
	for _, set := range h.conns {
		for c := range set {
			if c.ws != nil {
				all = append(all, c)
			}
		}
	}
	h.mu.Unlock()
	for _, c := range all {
		c.shutdown(websocket.StatusGoingAway, "server shutting down", "shutdown")
	}
}
