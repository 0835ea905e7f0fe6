package api

import (
	"context"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/server/tenants"
)

// WasmHooks are the gateway's Wasm extension points, implemented by
// app/wasmadapter: pre-processing node chains and the module upload API
// (/v1/policies, /v1/nodes).
type WasmHooks interface {
	// PreNodes checks a job's node chain and runs its pre-processing
	// nodes, which may rewrite the parameters or reject the job.
	PreNodes(ctx context.Context, tenant string, params jobs.Params) (jobs.Params, *apierr.Error)
	// Routes registers the upload API behind authenticate; who names the
	// caller's tenant and whether it acts as the operator.
	Routes(e *echo.Echo, authenticate echo.MiddlewareFunc, who func(echo.Context) (tenant string, operator bool))
}

// wasmRoutes mounts the Wasm upload API. The admin key and the keyless
// local principal (a loopback server without tenants) act as the operator;
// API-key tenants upload quality policies and nodes for themselves.
func (s *Server) wasmRoutes(e *echo.Echo) {
	if s.o.Wasm == nil {
		return
	}
	s.o.Wasm.Routes(e, s.authenticateOperator, func(c echo.Context) (string, bool) {
		p := principal(c)
		return p.Tenant, p.Local || p.Admin
	})
}

// authenticateOperator admits the admin key as the operator (acting for
// the local tenant's scope) and otherwise authenticates as usual.
func (s *Server) authenticateOperator(next echo.HandlerFunc) echo.HandlerFunc {
	plain := s.authenticate(next)
	return func(c echo.Context) error {
		if ok, err := s.isAdmin(c.Request().Context(), c.Request()); err == nil && ok {
			c.Set(principalKey, auth.Principal{Tenant: tenants.LocalID, Admin: true})
			err := next(c)
			if c.Request().Method != http.MethodGet {
				s.audit(c, true)
			}
			return err
		}
		return plain(c)
	}
}

// preNodes runs a job's pre-processing nodes and re-checks the rewritten
// parameters against the tenant's limits and the profile's caps.
func (s *Server) preNodes(ctx context.Context, p auth.Principal, params jobs.Params) (jobs.Params, *apierr.Error) {
	if len(params.Nodes) == 0 {
		return params, nil
	}
	if s.o.Wasm == nil {
		return params, apierr.Invalid("nodes", "this server runs no Wasm nodes")
	}
	out, aerr := s.o.Wasm.PreNodes(ctx, p.Tenant, params)
	if aerr != nil {
		return params, aerr
	}
	if aerr := s.validator.CheckLimits(p, out); aerr != nil {
		aerr.Message = "after the pre-processing nodes: " + aerr.Message
		return params, aerr
	}
	return out, nil
}
