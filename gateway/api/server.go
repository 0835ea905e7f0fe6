// Package api is Kiln's HTTP gateway: the native JSON API under /v1
// (jobs, images, models, profiles, samplers, account, status), the OpenAI
// Images endpoint, the WebSocket event stream, health and readiness
// probes, Prometheus metrics and the OpenAPI document, on Echo. It wires
// authentication, quotas, validation and the WebSocket hub to the job
// store and follows job records and worker heartbeats to feed them.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/nats-io/nats.go"

	"github.com/kiln-project/kiln/core/imagedecode"
	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/core/modelhash"
	"github.com/kiln-project/kiln/gateway/a1111"
	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/gateway/comfyui"
	"github.com/kiln-project/kiln/gateway/jobwatch"
	"github.com/kiln-project/kiln/gateway/latency"
	"github.com/kiln-project/kiln/gateway/live"
	"github.com/kiln-project/kiln/gateway/openai"
	"github.com/kiln-project/kiln/gateway/quota"
	"github.com/kiln-project/kiln/gateway/urlsign"
	"github.com/kiln-project/kiln/gateway/validate"
	"github.com/kiln-project/kiln/gateway/ws"
	"github.com/kiln-project/kiln/server/adapterstate"
	"github.com/kiln-project/kiln/server/audit"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/gpu"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/server/loralib"
	"github.com/kiln-project/kiln/server/metrics"
	"github.com/kiln-project/kiln/server/tenants"
)

// QualityPolicy may adjust a validated job before it is enqueued (the
// adaptive quality hook), for tenants or profiles that opt in with
// `quality: adaptive`. The result is checked against the tenant's limits
// again; an error or an out-of-limits answer keeps the original.
type QualityPolicy interface {
	Adjust(ctx context.Context, in QualityInput) (QualityResult, error)
}

// QualityInput is what a quality policy sees.
type QualityInput struct {
	// Tenant is the tenant whose request it is; the policy keeps its state
	// per (tenant, Params.Profile, Params.Model).
	Tenant     string
	QueueDepth int
	// P50 and P95 are the latencies (queue wait + run) of the key's jobs
	// that finished within the last minute, weighted by age.
	P50, P95 time.Duration
	// Target is the profile's latency target.
	Target time.Duration
	Params jobs.Params
	Limits config.Quota
	// Locked names the parameters the request set explicitly without
	// allow_adjust ("steps", "width", "height", "sampler", "profile"):
	// they must not change.
	Locked map[string]bool
}

// QualityResult is a quality policy's answer.
type QualityResult struct {
	Params jobs.Params
	// Reason says why parameters changed.
	Reason string
}

// Options configure a Server.
type Options struct {
	Config   *config.Config
	Store    *jobs.Store
	Tenants  *tenants.Store
	Conn     *nats.Conn
	Models   *catalog.Registry
	Profiles map[string]config.Profile
	Registry *metrics.Registry
	Signer   *urlsign.Signer
	GPU      *gpu.Monitor
	Logger   *slog.Logger
	// AllowLocal admits keyless requests as the local tenant while no
	// tenant exists (only for loopback listeners).
	AllowLocal bool
	// Quality is the optional quality policy.
	Quality QualityPolicy
	// Wasm adds pre-processing nodes and the module upload API (nil: none).
	Wasm WasmHooks
	// Audit records admin actions (nil: none).
	Audit *audit.Log
	// Web serves the browser client at / (nil: none).
	Web http.Handler
	// Library is the installed LoRAs and embeddings (nil: none).
	Library *loralib.Library
	// LoRAModules gives the LoRA layout of a model, to check tenants'
	// uploads against (nil, or an error: uploads for that model are
	// refused with 503).
	LoRAModules func(model string) (lora.Modules, error)
	// State persists the adapters' state: A1111 options, ComfyUI history
	// (nil: kept in memory only).
	State *adapterstate.Store
}

// Server is the gateway.
type Server struct {
	o         Options
	cfg       *config.Config
	log       *slog.Logger
	echo      *echo.Echo
	auth      *auth.Authenticator
	limiter   *quota.Limiter
	decodes   *imagedecode.Budget // server-wide memory of init-image decodes
	validator *validate.Validator
	hub       *ws.Hub
	watch     *jobwatch.Watcher
	openai    *openai.Handler
	a1111     *a1111.Handler
	comfy     *comfyui.Handler
	live      *live.Tracker
	hashes    modelhash.Cache
	// openapiDoc is the served OpenAPI document.
	openapiDoc []byte

	mu      sync.Mutex
	workers map[string]workerSeen
	beats   map[string]time.Time // last heartbeat of every worker (WorkerHeardWithin)

	// profMu guards overrides: the operator's profiles on top of the
	// configured ones.
	profMu    sync.Mutex
	overrides map[string]config.Profile

	// window holds recent job latencies per (tenant, profile, model) for
	// adaptive quality.
	window *latency.Windows

	m serverMetrics
}

type workerSeen struct {
	hb   events.Heartbeat
	seen time.Time
}

type serverMetrics struct {
	requests   *metrics.CounterVec
	latency    *metrics.HistogramVec
	submitted  *metrics.CounterVec
	rejected   *metrics.CounterVec
	queueDepth *metrics.Gauge
	inFlight   *metrics.Gauge
	workers    *metrics.Gauge
	latencies  *metrics.Histogram // end-to-end job latency seen by the gateway
	adjusted   *metrics.CounterVec
}

// New builds the gateway.
func New(o Options) (*Server, error) {
	if o.Config == nil || o.Store == nil || o.Tenants == nil || o.Conn == nil || o.Models == nil || o.Registry == nil || o.Signer == nil {
		return nil, errors.New("api: Config, Store, Tenants, Conn, Models, Registry and Signer are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	cfg := o.Config
	v, err := validate.New(o.Models, o.Profiles, cfg.DefaultProfile, int64(cfg.PlanCacheBytes))
	if err != nil {
		return nil, err
	}
	if o.Library != nil {
		v.SetLibrary(o.Library)
	}
	s := &Server{o: o, cfg: cfg, log: o.Logger, limiter: quota.New(), validator: v, workers: map[string]workerSeen{}, beats: map[string]time.Time{},
		window: latency.New(QualityWindow, QualityWindow/3, 512, nil), decodes: imagedecode.NewBudget(int64(cfg.ImageDecodeBudget))}
	s.auth = auth.New(o.Tenants, o.AllowLocal, cfg.LocalQuota)
	reg := o.Registry
	s.m = serverMetrics{
		requests: reg.NewCounterVec("kiln_http_requests_total", "HTTP requests by route pattern, method and status code.", "route", "method", "code"),
		latency: reg.NewHistogramVec("kiln_http_request_duration_seconds", "HTTP request latency by route pattern.",
			[]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120}, "route"),
		submitted:  reg.NewCounterVec("kiln_jobs_submitted_total", "Jobs accepted by the gateway, by source.", "source"),
		rejected:   reg.NewCounterVec("kiln_jobs_rejected_total", "Job submissions refused, by error code.", "code"),
		queueDepth: reg.NewGauge("kiln_queue_depth", "Jobs waiting for a worker."),
		inFlight:   reg.NewGauge("kiln_jobs_in_flight", "Jobs delivered to workers and not yet finished."),
		workers:    reg.NewGauge("kiln_workers", "Workers that sent a heartbeat recently."),
		latencies: reg.NewHistogram("kiln_job_latency_seconds", "Time from submission to a final state, seen by the gateway.",
			metrics.ExponentialBuckets(0.01, 2, 16)),
		adjusted: reg.NewCounterVec("kiln_quality_adjustments_total", "Request parameters changed by adaptive quality, by field.", "field"),
	}
	reg.Collect(func(emit func(name, help, typ string, labels, values []string, v float64)) {
		for _, c := range []struct {
			name  string
			stats func() (uint64, uint64, float64)
		}{{"plan", s.validator.Stats}} {
			h, m, r := c.stats()
			emit("kiln_cache_hits_total", "Cache hits by cache.", "counter", []string{"cache"}, []string{c.name}, float64(h))
			emit("kiln_cache_misses_total", "Cache misses by cache.", "counter", []string{"cache"}, []string{c.name}, float64(m))
			emit("kiln_cache_hit_ratio", "Cache hit ratio since start, by cache.", "gauge", []string{"cache"}, []string{c.name}, r)
		}
	})
	s.hub = ws.New(ws.Options{Store: o.Store, MaxPerTenant: cfg.MaxWebSocketsPerTenant, SendQueue: cfg.WSSendQueue,
		OriginPatterns: originPatterns(cfg.CORSOrigins), MetricsInterval: cfg.MetricsInterval.D(), Registry: reg, Logger: o.Logger,
		Position: func(j *jobs.Job) int { return s.watch.Position(j.Tenant, j.ID, j.Params.Priority) }})
	s.watch = jobwatch.New(jobwatch.Options{Store: o.Store, Live: s.limiter.Observe, Emit: s.onJobEvent})
	s.openai = openai.New(s, int64(cfg.MaxBodyBytes), cfg.SyncTimeout.D())
	s.live = live.New()
	s.a1111 = a1111.New(adapterBackend{s}, int64(cfg.MaxBodyBytes), cfg.SyncTimeout.D())
	s.comfy = comfyui.New(comfyui.Options{Backend: adapterBackend{s}, MaxBody: int64(cfg.MaxBodyBytes), MaxPixels: cfg.MaxImagePixels,
		OriginPatterns: originPatterns(cfg.CORSOrigins)})
	s.echo = s.routes()
	if s.openapiDoc, err = s.buildOpenAPI(); err != nil {
		return nil, err
	}
	return s, nil
}

// originPatterns turns CORS origins into WebSocket origin host patterns.
func originPatterns(origins []string) []string {
	var out []string
	for _, o := range origins {
		if o == "*" {
			return []string{"*"}
		}
		if u, err := parseOrigin(o); err == nil {
			out = append(out, u)
		}
	}
	return out
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.echo }

// Hub returns the WebSocket hub.
func (s *Server) Hub() *ws.Hub { return s.hub }

// Auth returns the authenticator.
func (s *Server) Auth() *auth.Authenticator { return s.auth }

// Validator returns the request validator.
func (s *Server) Validator() *validate.Validator { return s.validator }

// Run follows tenants, job records, events and heartbeats until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 5)
	go func() { errc <- s.auth.Run(ctx) }()
	go func() { errc <- s.watch.Run(ctx) }()
	go func() { errc <- s.o.Tenants.WatchProfiles(ctx, s.applyProfile) }()
	progress, err := s.o.Conn.Subscribe(events.ProgressWildcard, func(m *nats.Msg) {
		if tenant, job, ok := events.SplitSubject(m.Subject); ok {
			s.hub.PublishRaw(tenant, job, m.Data)
			var ev events.Event
			if json.Unmarshal(m.Data, &ev) == nil {
				s.live.Event(tenant, ev)
			}
		}
	})
	if err != nil {
		return fmt.Errorf("api: subscribe: %w", err)
	}
	defer progress.Unsubscribe()
	preview, err := s.o.Conn.Subscribe(events.PreviewWildcard, func(m *nats.Msg) {
		if tenant, job, ok := events.SplitSubject(m.Subject); ok {
			s.hub.PublishPreview(tenant, job, m.Data)
			if pv, err := events.DecodePreview(m.Data); err == nil {
				s.live.Preview(tenant, pv)
			}
		}
	})
	if err != nil {
		return fmt.Errorf("api: subscribe: %w", err)
	}
	defer preview.Unsubscribe()
	hb, err := s.o.Conn.Subscribe(events.HeartbeatSubject, func(m *nats.Msg) {
		var h events.Heartbeat
		if json.Unmarshal(m.Data, &h) != nil || h.Worker == "" {
			return
		}
		s.mu.Lock()
		if h.Stopped {
			delete(s.workers, h.Worker)
			delete(s.beats, h.Worker)
		} else {
			s.workers[h.Worker] = workerSeen{hb: h, seen: time.Now()}
			s.beats[h.Worker] = time.Now()
		}
		s.mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("api: subscribe: %w", err)
	}
	defer hb.Unsubscribe()

	t := time.NewTicker(s.cfg.MetricsInterval.D())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case <-t.C:
			s.hub.Broadcast(s.status(ctx))
		}
	}
}

// Ready reports whether the gateway can serve: NATS connected and the
// tenant and job mirrors synced.
func (s *Server) Ready() error {
	if !s.o.Conn.IsConnected() {
		return errors.New("not connected to NATS")
	}
	select {
	case <-s.auth.Synced():
	default:
		return errors.New("tenants not loaded yet")
	}
	select {
	case <-s.watch.Synced():
	default:
		return errors.New("job records not loaded yet")
	}
	return nil
}

// Close ends WebSocket connections (before the HTTP server shuts down).
func (s *Server) Close() {
	s.hub.Close()
	s.comfy.Close()
	s.validator.Close()
}

func (s *Server) onJobEvent(tenant string, ev events.Event) {
	if ev.Type == events.TypeSucceeded || ev.Type == events.TypeFailed || ev.Type == events.TypeCanceled {
		if j, _, err := s.o.Store.Get(context.Background(), tenant, ev.Job); err == nil {
			s.m.latencies.Observe(time.Since(j.CreatedAt).Seconds())
			if ev.Type == events.TypeSucceeded {
				s.window.Observe(qualityKey(tenant, j.Params.Profile, j.Params.Model), time.Since(j.CreatedAt))
			}
		}
	}
	s.hub.PublishEvent(tenant, ev)
	s.live.Event(tenant, ev)
}

// initImageLimits bounds one init image, from its header.
func (s *Server) initImageLimits() imagedecode.Limits {
	return imagedecode.Limits{MaxPixels: int64(s.cfg.MaxImagePixels), MaxSide: validate.MaxSide, MaxBytes: int64(s.cfg.MaxImageDecodeBytes)}
}

// WorkerHeardWithin reports whether a worker sent a heartbeat (and no
// "stopped" one since) within d. Records of workers silent for an hour are
// forgotten.
func (s *Server) WorkerHeardWithin(id string, d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w, at := range s.beats {
		if time.Since(at) > time.Hour {
			delete(s.beats, w)
		}
	}
	at, ok := s.beats[id]
	return ok && time.Since(at) <= d
}

// liveWorkers lists workers heard from within three intervals.
func (s *Server) liveWorkers() []events.Heartbeat {
	limit := 3*s.cfg.MetricsInterval.D() + time.Second
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]events.Heartbeat, 0, len(s.workers))
	for id, w := range s.workers {
		if time.Since(w.seen) > limit {
			delete(s.workers, id)
			continue
		}
		out = append(out, w.hb)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Worker < out[j].Worker })
	return out
}

// status builds the metrics event (also served by GET /v1/status).
func (s *Server) status(ctx context.Context) events.Metrics {
	m := events.Metrics{Type: events.TypeMetrics, Time: time.Now().UTC(), Workers: []events.WorkerStatus{}, GPUs: []events.GPU{}}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if waiting, inFlight, err := s.o.Store.QueueDepth(qctx); err == nil {
		m.QueueDepth, m.Running = waiting, inFlight
		s.m.queueDepth.Set(float64(waiting))
		s.m.inFlight.Set(float64(inFlight))
	}
	seenGPU := map[string]bool{}
	for _, hb := range s.liveWorkers() {
		m.Workers = append(m.Workers, events.WorkerStatus{ID: hb.Worker, Device: hb.Device, Busy: hb.Busy, Models: hb.Models, Speed: hb.Speed, Draining: hb.Draining})
		for _, g := range hb.GPUs {
			k := fmt.Sprintf("%s/%d/%s", hb.Worker, g.Index, g.Name)
			if !seenGPU[k] {
				seenGPU[k] = true
				m.GPUs = append(m.GPUs, g)
			}
		}
	}
	if len(m.GPUs) == 0 && s.o.GPU != nil {
		if g := s.o.GPU.Read(); g != nil {
			m.GPUs = g
		}
	}
	s.m.workers.Set(float64(len(m.Workers)))
	return m
}

// JobIDHeader names the job a response is about (job creation, job
// routes, the OpenAI endpoint); the access log records it.
const JobIDHeader = "Kiln-Job-Id"

// principalKey is where the auth middleware leaves the principal.
const principalKey = "kiln.principal"

func principal(c echo.Context) auth.Principal {
	p, _ := c.Get(principalKey).(auth.Principal)
	return p
}

func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.instrument, s.recover)
	if len(s.cfg.CORSOrigins) > 0 {
		e.Use(middleware.CORSWithConfig(middleware.CORSConfig{
			AllowOrigins:  s.cfg.CORSOrigins,
			AllowMethods:  []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions},
			AllowHeaders:  []string{"Authorization", "Content-Type"},
			ExposeHeaders: []string{"Retry-After", "Location"},
			MaxAge:        600,
		}))
	}
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", s.metrics)
	e.GET("/v1/openapi.json", s.openapi)
	e.GET("/docs", s.docs)

	// Route-level middleware (not a group's) keeps 405 for known paths.
	a := s.authenticate
	e.POST("/v1/jobs", s.createJob, a)
	e.GET("/v1/jobs", s.listJobs, a)
	e.GET("/v1/jobs/:id", s.getJob, a)
	e.DELETE("/v1/jobs/:id", s.cancelJob, a)
	e.GET("/v1/models", s.listModels, a)
	e.GET("/v1/profiles", s.listProfiles, a)
	e.GET("/v1/samplers", s.listSamplers, a)
	e.GET("/v1/loras", s.listLoRAs, a)
	e.PUT("/v1/loras/:name", s.putLoRA, a)
	e.DELETE("/v1/loras/:name", s.deleteLoRA, a)
	e.GET("/v1/embeddings", s.listEmbeddings, a)
	e.GET("/v1/account", s.account, a)
	e.GET("/v1/status", s.getStatus, a)
	e.GET("/v1/ws", s.websocket, a)
	e.POST("/v1/images/generations", s.generations, a)
	e.POST("/v1/images/edits", adapt(s.openai.Edits), a)
	e.POST("/v1/images/variations", adapt(s.openai.Variations), a)
	// Images authenticate by key or by a signed URL.
	e.GET("/v1/images/:id", s.getImage)
	for _, r := range s.a1111.Routes() {
		e.Add(r.Method, r.Path, adapt(r.Handle), a)
	}
	for _, r := range s.comfy.Routes() {
		e.Add(r.Method, echoPath(r.Path), adaptParams(r.Handle), a)
	}
	s.wasmRoutes(e)
	s.adminRoutes(e)
	// Unknown API paths get a JSON 404, never the web client.
	if s.o.Web != nil {
		web := echo.WrapHandler(s.o.Web)
		e.GET("/", web)
		e.GET("/*", func(c echo.Context) error {
			if strings.HasPrefix(c.Request().URL.Path, "/v1/") {
				return echo.ErrNotFound
			}
			return web(c)
		})
	}
	return e
}

func isOpenAIRoute(c echo.Context) bool {
	switch c.Path() {
	case "/v1/images/generations", "/v1/images/edits", "/v1/images/variations":
		return true
	}
	return false
}

// adapt mounts an adapter's handler of an authenticated request.
func adapt(h func(w http.ResponseWriter, r *http.Request, p auth.Principal)) echo.HandlerFunc {
	return func(c echo.Context) error {
		h(c.Response(), c.Request(), principal(c))
		return nil
	}
}

// adaptParams mounts an adapter's handler that reads path parameters.
func adaptParams(h func(w http.ResponseWriter, r *http.Request, p auth.Principal, params map[string]string)) echo.HandlerFunc {
	return func(c echo.Context) error {
		params := map[string]string{}
		for i, name := range c.ParamNames() {
			params[name] = c.ParamValues()[i]
		}
		h(c.Response(), c.Request(), principal(c), params)
		return nil
	}
}

// echoPath turns "/history/{prompt_id}" into Echo's "/history/:prompt_id".
func echoPath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			parts[i] = ":" + s[1:len(s)-1]
		}
	}
	return strings.Join(parts, "/")
}

// writeError renders an API error in the route's shape.
func writeError(c echo.Context, e *apierr.Error) error {
	switch {
	case isOpenAIRoute(c):
		openai.WriteError(c.Response(), e)
	case strings.HasPrefix(c.Request().URL.Path, a1111.Prefix+"/"):
		a1111.WriteError(c.Response(), e)
	case comfyui.IsPath(c.Request().URL.Path):
		comfyui.WriteError(c.Response(), e)
	default:
		apierr.Write(c.Response(), e)
	}
	return nil
}

func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var ae *apierr.Error
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &he):
		code := apierr.CodeInvalid
		switch he.Code {
		case http.StatusNotFound:
			code = apierr.CodeNotFound
		case http.StatusMethodNotAllowed:
			code = apierr.CodeMethodNotAllowed
		case http.StatusRequestEntityTooLarge:
			code = apierr.CodeTooLarge
		case http.StatusUnauthorized:
			code = apierr.CodeUnauthorized
		}
		ae = &apierr.Error{Status: he.Code, Code: code, Message: fmt.Sprint(he.Message)}
		switch he.Code {
		case http.StatusNotFound:
			ae.Message = fmt.Sprintf("no route %s %s", c.Request().Method, c.Request().URL.Path)
		case http.StatusMethodNotAllowed:
			ae.Allowed = allowedMethods(c)
			ae.Message = fmt.Sprintf("%s is not allowed on %s; allowed: %s", c.Request().Method, c.Request().URL.Path,
				strings.Join(ae.Allowed, ", "))
		}
	default:
		s.log.Error("request failed", "path", c.Request().URL.Path, "err", err)
		ae = apierr.New(http.StatusInternalServerError, apierr.CodeInternal, "", "internal error")
	}
	_ = writeError(c, ae)
}

// allowedMethods lists the methods the router knows for the matched path
// (without OPTIONS, which only CORS answers).
func allowedMethods(c echo.Context) []string {
	h, _ := c.Get(echo.ContextKeyHeaderAllow).(string)
	var out []string
	for _, m := range strings.Split(h, ",") {
		if m = strings.TrimSpace(m); m != "" && m != http.MethodOptions {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out
}

func (s *Server) recover(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.Error("handler panic", "path", c.Request().URL.Path, "panic", r)
				err = apierr.New(http.StatusInternalServerError, apierr.CodeInternal, "", "internal error")
			}
		}()
		return next(c)
	}
}

func (s *Server) instrument(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		took := time.Since(start).Seconds()
		status := c.Response().Status
		s.m.requests.With(route, c.Request().Method, fmt.Sprint(status)).Inc()
		s.m.latency.With(route).Observe(took)
		s.log.LogAttrs(c.Request().Context(), slog.LevelInfo, "request",
			slog.String("method", c.Request().Method), slog.String("route", route), slog.String("path", c.Request().URL.Path),
			slog.Int("status", status), slog.String("tenant", principal(c).Tenant), slog.Float64("latency_s", took),
			slog.String("job", c.Response().Header().Get(JobIDHeader)))
		return nil
	}
}

func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p, err := s.auth.Authenticate(c.Request())
		if err != nil {
			return writeError(c, err)
		}
		c.Set(principalKey, p)
		return next(c)
	}
}

// Route is one method and path of the API.
type Route struct{ Method, Path string }

// Routes lists the routes the server serves — its own and those the Wasm
// hooks mount — with paths in OpenAPI form ("/v1/jobs/{id}"), excluding the
// web client, sorted by path and method.
func (s *Server) Routes() []Route {
	seen := map[Route]bool{}
	var out []Route
	for _, r := range s.echo.Routes() {
		switch r.Method {
		case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch:
		default:
			continue // echo's internal not-found routes
		}
		if r.Path == "/" || r.Path == "/*" {
			continue
		}
		parts := strings.Split(r.Path, "/")
		for i, p := range parts {
			if strings.HasPrefix(p, ":") {
				parts[i] = "{" + p[1:] + "}"
			}
		}
		rt := Route{Method: r.Method, Path: strings.Join(parts, "/")}
		if !seen[rt] {
			seen[rt] = true
			out = append(out, rt)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].Method < out[j].Method
	})
	return out
}
