package api

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kiln-project/kiln/core/imagedecode"
	"github.com/kiln-project/kiln/core/sample"
	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/gateway/jobwatch"
	"github.com/kiln-project/kiln/gateway/validate"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/server/tenants"
)

// ParamsView is a job's parameters as the API shows them.
type ParamsView struct {
	jobs.Params
	// InitImage tells whether the job is image-to-image.
	InitImage bool `json:"init_image,omitempty"`
}

// JobView is a job as the API shows it.
type JobView struct {
	ID              string         `json:"id"`
	Status          string         `json:"status"`
	Params          ParamsView     `json:"params"`
	CreatedAt       time.Time      `json:"created_at"`
	StartedAt       *time.Time     `json:"started_at,omitempty"`
	FinishedAt      *time.Time     `json:"finished_at,omitempty"`
	Attempts        int            `json:"attempts"`
	Worker          string         `json:"worker,omitempty"`
	Images          []events.Image `json:"images"`
	Error           *jobs.Error    `json:"error,omitempty"`
	CancelRequested bool           `json:"cancel_requested,omitempty"`
	Position        *int           `json:"position,omitempty"`
	// Adjustments are the changes adaptive quality made to the request.
	Adjustments []jobs.Adjustment `json:"adjustments,omitempty"`
	// Memory says how the worker recovered from running out of device
	// memory (absent when it did not).
	Memory *jobs.MemoryRecovery `json:"memory,omitempty"`
}

func view(j *jobs.Job) JobView {
	v := JobView{ID: j.ID, Status: j.Status, Params: ParamsView{Params: j.Params, InitImage: j.Params.InitImage != ""},
		CreatedAt: j.CreatedAt, StartedAt: j.StartedAt, FinishedAt: j.FinishedAt, Attempts: j.Attempts,
		Worker: j.Worker, Error: j.Error, CancelRequested: j.CancelRequested, Images: []events.Image{}, Adjustments: j.Adjustments,
		Memory: j.Memory}
	for _, im := range j.Images {
		v.Images = append(v.Images, events.Image{ID: im.ID, URL: jobwatch.ImageURL(im.ID), Seed: im.Seed, Width: im.Width, Height: im.Height})
	}
	return v
}

// decodeInitImage decodes a base64 (or data: URL) PNG or JPEG after
// checking from its header its sides, pixels and decoded size
// (imagedecode.Info.DecodedBytes), holding that memory in the server-wide
// decode budget while it decodes.
func decodeInitImage(ctx context.Context, s string, lim imagedecode.Limits, budget *imagedecode.Budget) ([]byte, imagedecode.Info, *apierr.Error) {
	if rest, ok := strings.CutPrefix(s, "data:"); ok {
		meta, payload, found := strings.Cut(rest, ",")
		if !found || !strings.HasSuffix(meta, ";base64") {
			return nil, imagedecode.Info{}, apierr.Invalid("init_image", "a data: URL must be base64 encoded")
		}
		s = payload
	}
	data, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if data, err = base64.RawStdEncoding.DecodeString(s); err != nil {
			if data, err = base64.URLEncoding.DecodeString(s); err != nil {
				return nil, imagedecode.Info{}, apierr.Invalid("init_image", "init_image is not valid base64")
			}
		}
	}
	_, info, aerr := decodeImage(ctx, "init_image", data, lim, budget)
	if aerr != nil {
		return nil, info, aerr
	}
	return data, info, nil
}

// decodeImage checks an image's header against lim and decodes it within
// the decode budget; errors name field.
func decodeImage(ctx context.Context, field string, data []byte, lim imagedecode.Limits, budget *imagedecode.Budget) (image.Image, imagedecode.Info, *apierr.Error) {
	info, err := imagedecode.Header(data)
	if err != nil {
		return nil, info, apierr.Invalid(field, "%s is not a PNG or JPEG image: %v", field, err)
	}
	if err := lim.Check(info); err != nil {
		return nil, info, apierr.Limit(field, "%s is %d×%d with %d channel(s) of %d bits (%d bytes decoded); the limits are max_image_pixels %d, sides up to %d and max_image_decode_bytes %d",
			field, info.Width, info.Height, info.Channels, info.BitDepth, info.DecodedBytes(), lim.MaxPixels, lim.MaxSide, lim.MaxBytes)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	img, _, err := imagedecode.Decode(wctx, data, lim, budget)
	if err != nil {
		if errors.Is(err, imagedecode.ErrBusy) {
			e := apierr.New(http.StatusServiceUnavailable, apierr.CodeUnavailable, field, "too many images are being decoded; retry shortly")
			e.RetryAfter = time.Second
			return nil, info, e
		}
		return nil, info, apierr.Invalid(field, "%s does not decode: %v", field, err)
	}
	return img, info, nil
}

// Submit validates a job request for a tenant, checks its quotas and
// enqueues it.
func (s *Server) Submit(ctx context.Context, p auth.Principal, r *validate.JobRequest, source string) (*jobs.Job, *apierr.Error) {
	j, err := s.submit(ctx, p, r, source)
	if err != nil {
		s.m.rejected.With(err.Code).Inc()
	}
	return j, err
}

func (s *Server) submit(ctx context.Context, p auth.Principal, r *validate.JobRequest, source string) (*jobs.Job, *apierr.Error) {
	locked := lockedParams(r)
	var initData []byte
	var initInfo imagedecode.Info
	sizeUnset := r.Width == nil && r.Height == nil
	if r.InitImage != "" {
		data, cfg, err := decodeInitImage(ctx, r.InitImage, s.initImageLimits(), s.decodes)
		if err != nil {
			return nil, err
		}
		initData, initInfo = data, cfg
		// Without an explicit size, img2img keeps the init image's size.
		if r.Width == nil && r.Height == nil {
			w, h := max(cfg.Width/8*8, validate.MinSide), max(cfg.Height/8*8, validate.MinSide)
			r.Width, r.Height = &w, &h
		}
	}
	maskData, aerr := s.editInputs(ctx, r, initInfo, sizeUnset)
	if aerr != nil {
		return nil, aerr
	}
	params, aerr := s.validator.Plan(p, r, initData != nil)
	if aerr != nil {
		return nil, aerr
	}
	if params, aerr = s.preNodes(ctx, p, params); aerr != nil {
		return nil, aerr
	}
	var adjustments []jobs.Adjustment
	if s.o.Quality != nil {
		params, adjustments = s.adjustQuality(ctx, p, params, locked)
	}
	if aerr := s.costGuard(params); aerr != nil {
		return nil, aerr
	}
	j := &jobs.Job{ID: jobs.NewID(), Tenant: p.Tenant, Status: jobs.StatusQueued, Params: params, Source: source,
		CreatedAt: time.Now().UTC(), Weight: p.Weight, Adjustments: adjustments}
	undo, aerr := s.limiter.Reserve(p, j.ID, params.N)
	if aerr != nil {
		return nil, aerr
	}
	if initData != nil {
		name, err := s.o.Store.PutUpload(ctx, p.Tenant, j.ID, initData)
		if err != nil {
			undo()
			return nil, apierr.New(http.StatusServiceUnavailable, apierr.CodeUnavailable, "", "storing the init image failed; retry")
		}
		j.Params.InitImage = name
	}
	if maskData != nil {
		name, err := s.o.Store.PutUpload(ctx, p.Tenant, j.ID+"-mask", maskData)
		if err != nil {
			undo()
			return nil, apierr.New(http.StatusServiceUnavailable, apierr.CodeUnavailable, "", "storing the mask failed; retry")
		}
		j.Params.Mask = name
	}
	if err := s.o.Store.Submit(ctx, j); err != nil {
		undo()
		s.log.Error("enqueue failed", "err", err)
		return nil, apierr.New(http.StatusServiceUnavailable, apierr.CodeUnavailable, "", "the job could not be queued; retry")
	}
	_ = s.o.Conn.Publish(events.KickSubject, []byte(params.Priority))
	s.m.submitted.With(source).Inc()
	return j, nil
}

// Wait implements openai.Backend.
func (s *Server) Wait(ctx context.Context, tenant, id string) (*jobs.Job, error) {
	return s.watch.Wait(ctx, tenant, id)
}

// Cancel implements openai.Backend.
func (s *Server) Cancel(ctx context.Context, tenant, id string) { _, _ = s.cancel(ctx, tenant, id) }

// Image implements openai.Backend.
func (s *Server) Image(ctx context.Context, tenant, id string) ([]byte, error) {
	return s.o.Store.GetImage(ctx, tenant, id)
}

// DecodeImage implements openai.Backend: an upload decoded within the
// init-image limits and the server's decode budget.
func (s *Server) DecodeImage(ctx context.Context, field string, data []byte) (image.Image, *apierr.Error) {
	img, _, aerr := decodeImage(ctx, field, data, s.initImageLimits(), s.decodes)
	return img, aerr
}

// HasProfile implements openai.Backend.
func (s *Server) HasProfile(name string) bool { _, ok := s.validator.Profiles()[name]; return ok }

// ImageURL implements openai.Backend: an absolute URL signed for an hour.
func (s *Server) ImageURL(r *http.Request, tenant, imageID string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	u := url.URL{Scheme: scheme, Host: r.Host, Path: jobwatch.ImageURL(imageID),
		RawQuery: s.o.Signer.Query(tenant, imageID, time.Hour).Encode()}
	return u.String()
}

func (s *Server) createJob(c echo.Context) error {
	var r validate.JobRequest
	if err := apierr.DecodeStrict(c.Request().Body, int64(s.cfg.MaxBodyBytes), &r); err != nil {
		s.m.rejected.With(err.Code).Inc()
		return writeError(c, err)
	}
	j, err := s.Submit(c.Request().Context(), principal(c), &r, "api")
	if err != nil {
		return writeError(c, err)
	}
	v := view(j)
	// The fair-queuing estimate (the job counts as its tenant's newest
	// of its priority until the watch sees it).
	pos := s.watch.Position(j.Tenant, j.ID, j.Params.Priority)
	v.Position = &pos
	c.Response().Header().Set("Location", "/v1/jobs/"+j.ID)
	c.Response().Header().Set(JobIDHeader, j.ID)
	if h := jobs.AdjustedHeader(j.Adjustments); h != "" {
		c.Response().Header().Set(jobs.AdjustedHeaderName, h)
	}
	return c.JSON(http.StatusAccepted, v)
}

// setJobHeader names the job a response is about (only well-formed ids).
func setJobHeader(c echo.Context, id string) {
	if jobs.ValidID(id) {
		c.Response().Header().Set(JobIDHeader, id)
	}
}

func (s *Server) getJob(c echo.Context) error {
	setJobHeader(c, c.Param("id"))
	j, _, err := s.o.Store.Get(c.Request().Context(), principal(c).Tenant, c.Param("id"))
	if errors.Is(err, jobs.ErrNotFound) {
		return writeError(c, apierr.NotFound("job"))
	}
	if err != nil {
		return err
	}
	v := view(j)
	if j.Status == jobs.StatusQueued {
		pos := s.watch.Position(j.Tenant, j.ID, j.Params.Priority)
		v.Position = &pos
	}
	return c.JSON(http.StatusOK, v)
}

func (s *Server) listJobs(c echo.Context) error {
	q := c.QueryParams()
	for k := range q {
		switch k {
		case "status", "limit", "cursor":
		default:
			return writeError(c, &apierr.Error{Status: 400, Code: apierr.CodeUnknownField, Field: k, Message: "unknown query parameter " + strconv.Quote(k)})
		}
	}
	o := jobs.ListOptions{Status: q.Get("status"), Limit: 20, Before: q.Get("cursor")}
	if o.Status != "" && !jobs.ValidStatus(o.Status) {
		return writeError(c, apierr.Invalid("status", "status must be queued, running, succeeded, failed or canceled"))
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			return writeError(c, apierr.Invalid("limit", "limit must be from 1 to 100"))
		}
		o.Limit = n
	}
	if o.Before != "" && !jobs.ValidID(o.Before) {
		return writeError(c, apierr.Invalid("cursor", "cursor is not a job id"))
	}
	list, next, err := s.o.Store.List(c.Request().Context(), principal(c).Tenant, o)
	if err != nil {
		return err
	}
	out := struct {
		Jobs       []JobView `json:"jobs"`
		NextCursor string    `json:"next_cursor,omitempty"`
	}{Jobs: make([]JobView, 0, len(list)), NextCursor: next}
	var positions map[string]int
	for _, j := range list {
		v := view(j)
		if j.Status == jobs.StatusQueued {
			if positions == nil {
				positions = s.watch.Positions(principal(c).Tenant)
			}
			pos, ok := positions[j.ID]
			if !ok { // newer than the watch
				pos = s.watch.Position(j.Tenant, j.ID, j.Params.Priority)
			}
			v.Position = &pos
		}
		out.Jobs = append(out.Jobs, v)
	}
	return c.JSON(http.StatusOK, out)
}

// cancel stops a tenant's job: a queued job is canceled at once, a running
// one is asked to stop at its next step.
func (s *Server) cancel(ctx context.Context, tenant, id string) (*jobs.Job, *apierr.Error) {
	errFinal := errors.New("final")
	now := time.Now().UTC()
	j, err := s.o.Store.Update(ctx, tenant, id, func(r *jobs.Job) error {
		switch r.Status {
		case jobs.StatusQueued:
			r.Status, r.FinishedAt, r.CancelRequested = jobs.StatusCanceled, &now, true
		case jobs.StatusRunning:
			r.CancelRequested = true
		default:
			return errFinal
		}
		return nil
	})
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return nil, apierr.NotFound("job")
	case errors.Is(err, errFinal):
		return nil, apierr.New(http.StatusConflict, apierr.CodeConflict, "", "job already %s", j.Status)
	case err != nil:
		return nil, apierr.New(http.StatusServiceUnavailable, apierr.CodeUnavailable, "", "cancel failed; retry")
	}
	if j.Status == jobs.StatusRunning {
		_ = s.o.Conn.Publish(events.CancelSubject(tenant, id), nil)
	}
	return j, nil
}

func (s *Server) cancelJob(c echo.Context) error {
	setJobHeader(c, c.Param("id"))
	j, err := s.cancel(c.Request().Context(), principal(c).Tenant, c.Param("id"))
	if err != nil {
		return writeError(c, err)
	}
	code := http.StatusOK
	if j.Status == jobs.StatusRunning {
		code = http.StatusAccepted // stops at the next step
	}
	return c.JSON(code, view(j))
}

func (s *Server) getImage(c echo.Context) error {
	id := c.Param("id")
	var tenant string
	if c.QueryParam("sig") != "" {
		t, err := s.o.Signer.Verify(c.QueryParams(), id)
		if err != nil {
			return writeError(c, apierr.New(http.StatusUnauthorized, apierr.CodeUnauthorized, "", "%v", err))
		}
		if !s.auth.TenantLive(t) { // a URL never outlives its tenant
			return writeError(c, apierr.New(http.StatusUnauthorized, apierr.CodeUnauthorized, "", "the tenant of this link is revoked"))
		}
		tenant = t
	} else {
		p, err := s.auth.Authenticate(c.Request())
		if err != nil {
			return writeError(c, err)
		}
		tenant = p.Tenant
	}
	c.Set(principalKey, auth.Principal{Tenant: tenant})
	data, err := s.o.Store.GetImage(c.Request().Context(), tenant, id)
	if errors.Is(err, jobs.ErrNotFound) {
		return writeError(c, apierr.NotFound("image"))
	}
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Cache-Control", "private, max-age=86400, immutable")
	h.Set("Content-Disposition", fmt.Sprintf(`inline; filename="%s.png"`, id))
	return c.Blob(http.StatusOK, "image/png", data)
}

func (s *Server) listModels(c echo.Context) error {
	s.o.Models.Refresh()
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
		Format  string `json:"format"`
		Bytes   int64  `json:"bytes"`
		Default bool   `json:"default"`
		Builtin bool   `json:"builtin"`
		// Family is the model family that serves it ("sd", "sdxl").
		Family string `json:"family,omitempty"`
		// NativeWidth × NativeHeight is what requests without a size get
		// (within the profile's and tenant's caps); absent when unknown.
		NativeWidth  int `json:"native_width,omitempty"`
		NativeHeight int `json:"native_height,omitempty"`
		VAEFactor    int `json:"vae_factor,omitempty"`
		// Residency lists the workers holding the model in GPU or pinned
		// host memory (absent: on disk only).
		Residency []residency `json:"residency,omitempty"`
	}
	def := s.o.Models.Default()
	where, totals := residencies(s.liveWorkers())
	out := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
		// Memory sums each worker's model memory (shared components once).
		Memory []workerMemory `json:"memory,omitempty"`
	}{Object: "list", Data: []model{}, Memory: totals}
	for _, m := range s.o.Models.List() {
		out.Data = append(out.Data, model{ID: m.Name, Object: "model", OwnedBy: "kiln", Format: m.Format, Bytes: m.Bytes, Default: m.Name == def, Builtin: m.Builtin,
			Family: m.Family, NativeWidth: m.NativeWidth, NativeHeight: m.NativeHeight, VAEFactor: m.VAEFactor, Residency: where[m.Name]})
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) listProfiles(c echo.Context) error {
	out := struct {
		Default string           `json:"default"`
		Data    []config.Profile `json:"data"`
	}{Default: s.cfg.DefaultProfile, Data: []config.Profile{}}
	profiles := s.validator.Profiles()
	for _, name := range sortedKeys(profiles) {
		out.Data = append(out.Data, profiles[name])
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) listSamplers(c echo.Context) error {
	type smp struct {
		ID    string `json:"id"`
		Label string `json:"label"`
	}
	out := struct {
		Data []smp `json:"data"`
	}{}
	for _, n := range s.validator.Samplers() {
		out.Data = append(out.Data, smp{n, sample.Label(n)})
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) account(c echo.Context) error {
	p := principal(c)
	return c.JSON(http.StatusOK, map[string]any{
		"tenant": p.Tenant, "keyless": p.Local, "quota": p.Quota,
		"active_jobs": s.limiter.Active(p.Tenant), "websockets": s.hub.Count(p.Tenant),
		"limits": map[string]any{"max_side": validate.MaxSide, "min_side": validate.MinSide, "max_prompt_chars": validate.MaxPromptChars,
			"max_guidance": validate.MaxGuidance, "max_seed": uint64(validate.MaxSeed), "max_image_pixels": s.cfg.MaxImagePixels,
			"max_body_bytes": int64(s.cfg.MaxBodyBytes)},
	})
}

// statusView is GET /v1/status: the metrics event plus the auth mode.
type statusView struct {
	events.Metrics
	Auth tenants.Mode `json:"auth"`
}

func (s *Server) getStatus(c echo.Context) error {
	return c.JSON(http.StatusOK, statusView{Metrics: s.status(c.Request().Context()), Auth: s.auth.Mode()})
}

func (s *Server) websocket(c echo.Context) error {
	s.hub.Serve(c.Response(), c.Request(), principal(c))
	return nil
}

func (s *Server) generations(c echo.Context) error {
	s.openai.Generations(c.Response(), c.Request(), principal(c))
	return nil
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	if err := s.Ready(); err != nil {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": err.Error()})
	}
	return c.JSON(http.StatusOK, map[string]any{"status": "ready", "workers": len(s.liveWorkers())})
}

func (s *Server) metrics(c echo.Context) error {
	c.Response().Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	c.Response().WriteHeader(http.StatusOK)
	_, err := s.o.Registry.WriteTo(c.Response())
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// parseOrigin turns "https://app.example.com" into the host pattern the
// WebSocket library checks ("app.example.com").
func parseOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("invalid origin %q", o)
	}
	return u.Host, nil
}
