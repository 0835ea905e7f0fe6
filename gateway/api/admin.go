package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/server/audit"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/tenants"
)

// The admin API (/v1/admin/…) manages tenants, keys, quotas, weights and
// quality modes, lists profiles, drains workers and reads the audit log.
// It is authenticated by the admin key alone (tenant keys get 403), and
// every change — and every refused attempt — is recorded in the audit log.

// adminKey is where the admin middleware marks an admin request.
const adminKey = "kiln.admin"

// auditDetails is where a handler leaves what the audit entry records.
const auditDetails = "kiln.audit"

func (s *Server) adminRoutes(e *echo.Echo) {
	a := s.adminAuth
	e.GET("/v1/admin/tenants", s.adminListTenants, a)
	e.POST("/v1/admin/tenants", s.adminCreateTenant, a)
	e.GET("/v1/admin/tenants/:id", s.adminGetTenant, a)
	e.PATCH("/v1/admin/tenants/:id", s.adminPatchTenant, a)
	e.DELETE("/v1/admin/tenants/:id", s.adminRevokeTenant, a)
	e.POST("/v1/admin/tenants/:id/keys", s.adminNewKey, a)
	e.DELETE("/v1/admin/tenants/:id/keys/:key", s.adminRevokeKey, a)
	e.GET("/v1/admin/profiles", s.listProfiles, a)
	e.PUT("/v1/admin/profiles/:name", s.adminPutProfile, a)
	e.DELETE("/v1/admin/profiles/:name", s.adminDeleteProfile, a)
	e.GET("/v1/admin/workers", s.adminWorkers, a)
	e.POST("/v1/admin/workers/:id/drain", s.adminDrain(true), a)
	e.POST("/v1/admin/workers/:id/undrain", s.adminDrain(false), a)
	e.GET("/v1/admin/audit", s.adminAudit, a)
	e.POST("/v1/admin/key/rotate", s.adminRotate, a)
}

// isAdmin reports whether the request carries the admin key.
func (s *Server) isAdmin(ctx context.Context, r *http.Request) (bool, error) {
	key := auth.KeyFromRequest(r)
	if !tenants.ValidAdminKey(key) {
		return false, nil
	}
	return s.o.Tenants.VerifyAdmin(ctx, key)
}

// adminAuth admits only the admin key, and records changes and refusals
// in the audit log.
func (s *Server) adminAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		ok, err := s.isAdmin(c.Request().Context(), c.Request())
		var aerr *apierr.Error
		switch {
		case err != nil:
			s.log.Error("admin key check failed", "err", err)
			aerr = apierr.New(http.StatusServiceUnavailable, apierr.CodeUnavailable, "", "the admin key could not be checked; retry")
		case ok:
		case auth.KeyFromRequest(c.Request()) == "":
			aerr = apierr.New(http.StatusUnauthorized, apierr.CodeUnauthorized, "", "the admin API needs the admin key: send Authorization: Bearer kilnadm_…")
		default:
			if _, terr := s.auth.Verify(auth.KeyFromRequest(c.Request())); terr == nil {
				aerr = apierr.New(http.StatusForbidden, apierr.CodeForbidden, "", "a tenant key cannot use the admin API; use the admin key")
			} else {
				aerr = apierr.New(http.StatusUnauthorized, apierr.CodeUnauthorized, "", "invalid or revoked admin key")
			}
		}
		if aerr == nil {
			c.Set(adminKey, true)
			c.Set(principalKey, auth.Principal{Tenant: "admin"})
			err = next(c)
			if err != nil {
				c.Error(err)
			}
		} else {
			_ = writeError(c, aerr)
		}
		if c.Request().Method != http.MethodGet || aerr != nil {
			s.audit(c, aerr == nil)
		}
		return nil
	}
}

// audit records one admin request.
func (s *Server) audit(c echo.Context, admitted bool) {
	if s.o.Audit == nil {
		return
	}
	actor := "admin"
	if !admitted {
		actor = "unauthenticated"
	}
	var parts []string
	for _, p := range []string{"hook", "id", "name", "key"} {
		if v := c.Param(p); v != "" {
			parts = append(parts, v)
		}
	}
	target := strings.Join(parts, "/")
	e := audit.Entry{Actor: actor, Remote: c.RealIP(), Action: c.Request().Method + " " + c.Path(), Target: target,
		Status: c.Response().Status, Details: c.Get(auditDetails)}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), 5*time.Second)
	defer cancel()
	if err := s.o.Audit.Record(ctx, e); err != nil {
		s.log.Error("audit log write failed", "action", e.Action, "err", err)
	}
}

// TenantView is a tenant as the admin API shows it.
type TenantView struct {
	tenants.Tenant
	Keys []KeyView `json:"keys"`
}

// KeyView is an API key as the admin API shows it (never its secret or
// hash).
type KeyView struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	Revoked   bool      `json:"revoked,omitempty"`
}

// QuotaPatch changes some limits of a quota.
type QuotaPatch struct {
	ConcurrentJobs  *int `json:"concurrent_jobs,omitempty"`
	ImagesPerMinute *int `json:"images_per_minute,omitempty"`
	MaxPixels       *int `json:"max_pixels,omitempty"`
	MaxSteps        *int `json:"max_steps,omitempty"`
	MaxN            *int `json:"max_n,omitempty"`
}

// Apply returns q with the patch's limits set.
func (p *QuotaPatch) Apply(q config.Quota) config.Quota {
	if p == nil {
		return q
	}
	for _, f := range []struct {
		v   *int
		dst *int
	}{{p.ConcurrentJobs, &q.ConcurrentJobs}, {p.ImagesPerMinute, &q.ImagesPerMinute}, {p.MaxPixels, &q.MaxPixels},
		{p.MaxSteps, &q.MaxSteps}, {p.MaxN, &q.MaxN}} {
		if f.v != nil {
			*f.dst = *f.v
		}
	}
	return q
}

// TenantPatch is the body of PATCH /v1/admin/tenants/{id}.
type TenantPatch struct {
	Quota   *QuotaPatch `json:"quota,omitempty"`
	Weight  *float64    `json:"weight,omitempty"`
	Quality *string     `json:"quality,omitempty"`
}

// TenantCreate is the body of POST /v1/admin/tenants.
type TenantCreate struct {
	ID string `json:"id"`
	TenantPatch
}

func tenantError(err error) *apierr.Error {
	switch {
	case errors.Is(err, tenants.ErrNotFound):
		return apierr.NotFound("tenant")
	case errors.Is(err, tenants.ErrExists):
		return apierr.New(http.StatusConflict, apierr.CodeConflict, "id", "%v", err)
	}
	return apierr.Invalid("", "%v", err)
}

func (s *Server) tenantView(ctx context.Context, t *tenants.Tenant) (TenantView, error) {
	keys, err := s.o.Tenants.Keys(ctx, t.ID)
	v := TenantView{Tenant: *t, Keys: []KeyView{}}
	for _, k := range keys {
		v.Keys = append(v.Keys, KeyView{ID: k.ID, CreatedAt: k.CreatedAt, Revoked: k.Revoked})
	}
	return v, err
}

func (s *Server) adminListTenants(c echo.Context) error {
	list, _, err := s.o.Tenants.List(c.Request().Context())
	if err != nil {
		return err
	}
	out := struct {
		Data []TenantView `json:"data"`
	}{Data: []TenantView{}}
	for i := range list {
		v, err := s.tenantView(c.Request().Context(), &list[i])
		if err != nil {
			return err
		}
		out.Data = append(out.Data, v)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) adminCreateTenant(c echo.Context) error {
	var r TenantCreate
	if err := apierr.DecodeStrict(c.Request().Body, 64<<10, &r); err != nil {
		return writeError(c, err)
	}
	c.Set(auditDetails, r)
	settings := tenants.Settings{Weight: r.Weight, Quality: r.Quality}
	if err := settings.Validate(); err != nil {
		return writeError(c, apierr.Invalid("", "%v", err))
	}
	ctx := c.Request().Context()
	t, key, err := s.o.Tenants.Create(ctx, r.ID, r.Quota.Apply(s.cfg.DefaultQuota))
	if err != nil {
		return writeError(c, tenantError(err))
	}
	if r.Weight != nil || r.Quality != nil {
		if t, err = s.o.Tenants.SetSettings(ctx, t.ID, settings); err != nil {
			return writeError(c, tenantError(err))
		}
	}
	v, err := s.tenantView(ctx, t)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, struct {
		Tenant TenantView `json:"tenant"`
		// Key is the tenant's first API key, shown only here.
		Key string `json:"key"`
	}{v, key})
}

func (s *Server) adminGetTenant(c echo.Context) error {
	t, err := s.o.Tenants.Get(c.Request().Context(), c.Param("id"))
	if err != nil {
		return writeError(c, tenantError(err))
	}
	v, err := s.tenantView(c.Request().Context(), t)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (s *Server) adminPatchTenant(c echo.Context) error {
	var r TenantPatch
	if err := apierr.DecodeStrict(c.Request().Body, 64<<10, &r); err != nil {
		return writeError(c, err)
	}
	c.Set(auditDetails, r)
	ctx := c.Request().Context()
	t, err := s.o.Tenants.Get(ctx, c.Param("id"))
	if err != nil {
		return writeError(c, tenantError(err))
	}
	settings := tenants.Settings{Weight: r.Weight, Quality: r.Quality}
	if err := settings.Validate(); err != nil {
		return writeError(c, apierr.Invalid("", "%v", err))
	}
	if q := r.Quota.Apply(t.Quota); q != t.Quota {
		if t, err = s.o.Tenants.SetQuota(ctx, t.ID, q); err != nil {
			return writeError(c, tenantError(err))
		}
	}
	if r.Weight != nil || r.Quality != nil {
		if t, err = s.o.Tenants.SetSettings(ctx, t.ID, settings); err != nil {
			return writeError(c, tenantError(err))
		}
	}
	v, err := s.tenantView(ctx, t)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (s *Server) adminRevokeTenant(c echo.Context) error {
	ctx := c.Request().Context()
	if err := s.o.Tenants.Revoke(ctx, c.Param("id")); err != nil {
		return writeError(c, tenantError(err))
	}
	return s.adminGetTenant(c)
}

func (s *Server) adminNewKey(c echo.Context) error {
	key, err := s.o.Tenants.NewKey(c.Request().Context(), c.Param("id"))
	if err != nil {
		return writeError(c, tenantError(err))
	}
	id, _, _ := tenants.ParseKey(key)
	return c.JSON(http.StatusCreated, map[string]string{"tenant": c.Param("id"), "id": id, "key": key})
}

func (s *Server) adminRevokeKey(c echo.Context) error {
	if err := s.o.Tenants.RevokeKey(c.Request().Context(), c.Param("id"), c.Param("key")); err != nil {
		return writeError(c, tenantError(err))
	}
	return c.JSON(http.StatusOK, map[string]any{"tenant": c.Param("id"), "id": c.Param("key"), "revoked": true})
}

func (s *Server) adminWorkers(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"data": s.status(c.Request().Context()).Workers})
}

// adminDrain asks a worker to stop (or resume) taking jobs and answers
// with the worker's state; 404 when no such worker answers.
func (s *Server) adminDrain(drain bool) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Param("id")
		c.Set(auditDetails, events.Drain{Worker: id, Drain: drain})
		data, _ := json.Marshal(events.Drain{Worker: id, Drain: drain})
		ctx, cancel := context.WithTimeout(c.Request().Context(), 3*time.Second)
		defer cancel()
		msg, err := s.o.Conn.RequestWithContext(ctx, events.DrainSubject, data)
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			return writeError(c, apierr.New(http.StatusNotFound, apierr.CodeNotFound, "", "no live worker %q answered", id))
		}
		if err != nil {
			return err
		}
		var hb events.Heartbeat
		if err := json.Unmarshal(msg.Data, &hb); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, events.WorkerStatus{ID: hb.Worker, Device: hb.Device, Busy: hb.Busy, Models: hb.Models,
			Speed: hb.Speed, Draining: hb.Draining})
	}
}

func (s *Server) adminAudit(c echo.Context) error {
	if s.o.Audit == nil {
		return writeError(c, apierr.New(http.StatusServiceUnavailable, apierr.CodeUnavailable, "", "no audit log"))
	}
	n := 100
	if l := c.QueryParam("limit"); l != "" {
		v, err := strconv.Atoi(l)
		if err != nil || v < 1 || v > 1000 {
			return writeError(c, apierr.Invalid("limit", "limit must be from 1 to 1000"))
		}
		n = v
	}
	list, err := s.o.Audit.Last(c.Request().Context(), n)
	if err != nil {
		return err
	}
	if list == nil {
		list = []audit.Entry{}
	}
	return c.JSON(http.StatusOK, map[string]any{"data": list})
}

func (s *Server) adminRotate(c echo.Context) error {
	key, err := s.o.Tenants.RotateAdminKey(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]string{"admin_key": key})
}

// adminPutProfile adds or replaces a performance profile for every
// gateway (stored in the tenants bucket; the configured version returns
// when it is deleted).
func (s *Server) adminPutProfile(c echo.Context) error {
	var p config.Profile
	if err := apierr.DecodeStrict(c.Request().Body, 64<<10, &p); err != nil {
		return writeError(c, err)
	}
	c.Set(auditDetails, p)
	name := c.Param("name")
	if p.Name == "" {
		p.Name = name
	}
	if p.Name != name {
		return writeError(c, apierr.Invalid("name", "the body names profile %q, the path %q", p.Name, name))
	}
	known := false
	for _, n := range s.validator.Samplers() {
		known = known || n == p.Sampler
	}
	if !known {
		return writeError(c, apierr.Invalid("sampler", "unknown sampler %q (GET /v1/samplers lists them)", p.Sampler))
	}
	if err := s.o.Tenants.PutProfile(c.Request().Context(), p); err != nil {
		return writeError(c, apierr.Invalid("", "%v", err))
	}
	s.applyProfile(name, &p) // this gateway at once; the others through the watch
	return c.JSON(http.StatusOK, p)
}

func (s *Server) adminDeleteProfile(c echo.Context) error {
	name := c.Param("name")
	if name == s.cfg.DefaultProfile {
		if _, configured := s.o.Profiles[name]; !configured {
			return writeError(c, apierr.New(http.StatusConflict, apierr.CodeConflict, "", "profile %s is the default", name))
		}
	}
	if err := s.o.Tenants.DeleteProfile(c.Request().Context(), name); err != nil {
		return writeError(c, tenantError(err))
	}
	s.applyProfile(name, nil)
	return c.NoContent(http.StatusNoContent)
}

// applyProfile sets (or, with nil, removes) an operator's version of a
// profile on top of the configured ones.
func (s *Server) applyProfile(name string, p *config.Profile) {
	s.profMu.Lock()
	defer s.profMu.Unlock()
	if s.overrides == nil {
		s.overrides = map[string]config.Profile{}
	}
	if p != nil {
		s.overrides[name] = *p
	} else {
		delete(s.overrides, name)
	}
	merged := make(map[string]config.Profile, len(s.o.Profiles)+len(s.overrides))
	for k, v := range s.o.Profiles {
		merged[k] = v
	}
	for k, v := range s.overrides {
		merged[k] = v
	}
	if err := s.validator.SetProfiles(merged); err != nil {
		s.log.Warn("ignoring a profile change", "profile", name, "err", err)
	}
}
