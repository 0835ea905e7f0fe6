package wasmadapter

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/kiln-project/kiln/gateway/apierr"
	nodes "github.com/kiln-project/kiln/nodes-wasm/builtin"
	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/kiln-project/kiln/wasmhost/registry"
)

// Principal is who calls the upload API: a tenant, and whether it may
// act as the operator (upload batching and eviction policies and the
// operator-wide quality policy).
type Principal struct {
	Tenant   string
	Operator bool
}

// CodeModuleRejected is the API error code of a module that failed validation.
const CodeModuleRejected = "module_rejected"

// Routes registers the upload API on e, each route behind authenticate:
//
//	PUT    /v1/policies/{hook}/{name}[?mode=store|activate|shadow]  upload a version (body: the .wasm)
//	GET    /v1/policies/{hook}                 the slot: active, history, shadow statistics
//	GET    /v1/policies/{hook}/{name}          a name's versions and the slot
//	POST   /v1/policies/{hook}/{name}/activate [{"version": N}] (default: the latest)
//	POST   /v1/policies/{hook}/{name}/shadow   [{"version": N}] run as the shadow candidate
//	DELETE /v1/policies/{hook}/shadow          end shadow mode
//	POST   /v1/policies/{hook}/rollback        restore the previous active version
//	PUT    /v1/nodes/{name}[?mode=activate|store]
//	GET    /v1/nodes                           built-in and own nodes
//	GET    /v1/nodes/{name}
//	POST   /v1/nodes/{name}/activate, POST /v1/nodes/{name}/rollback
//
// Batching and eviction policies are the operator's; tenants upload
// quality policies (for themselves) and nodes.
//
// who names the caller of an authenticated request: its tenant, and
// whether it may act as the operator.
func (w *Wasm) Routes(e *echo.Echo, authenticate echo.MiddlewareFunc, who func(echo.Context) (tenant string, operator bool)) {
	h := &handlers{w: w, who: func(c echo.Context) Principal {
		t, op := who(c)
		return Principal{Tenant: t, Operator: op}
	}}
	a := authenticate
	e.PUT("/v1/policies/:hook/:name", h.uploadPolicy, a)
	e.GET("/v1/policies/:hook", h.policySlot, a)
	e.GET("/v1/policies/:hook/:name", h.policyName, a)
	e.POST("/v1/policies/:hook/:name/activate", h.activatePolicy, a)
	e.POST("/v1/policies/:hook/:name/shadow", h.shadowPolicy, a)
	e.DELETE("/v1/policies/:hook/shadow", h.endShadow, a)
	e.POST("/v1/policies/:hook/rollback", h.rollbackPolicy, a)
	e.PUT("/v1/nodes/:name", h.uploadNode, a)
	e.GET("/v1/nodes", h.listNodes, a)
	e.GET("/v1/nodes/:name", h.nodeName, a)
	e.POST("/v1/nodes/:name/activate", h.activateNode, a)
	e.POST("/v1/nodes/:name/rollback", h.rollbackNode, a)
}

type handlers struct {
	w   *Wasm
	who func(echo.Context) Principal
}

func fail(c echo.Context, e *apierr.Error) error {
	apierr.Write(c.Response(), e)
	return nil
}

// apiError maps registry errors onto API errors.
func apiError(err error) *apierr.Error {
	var rej *registry.RejectedError
	switch {
	case errors.As(err, &rej):
		return apierr.New(http.StatusUnprocessableEntity, CodeModuleRejected, "", "%s", strings.Join(rej.Reasons, "; "))
	case errors.Is(err, registry.ErrForbidden):
		return apierr.New(http.StatusForbidden, "forbidden", "", "%v", err)
	case errors.Is(err, registry.ErrInvalid):
		return apierr.Invalid("", "%v", err)
	case errors.Is(err, registry.ErrNotFound):
		return apierr.New(http.StatusNotFound, apierr.CodeNotFound, "", "%v", err)
	case errors.Is(err, registry.ErrNoPrevious):
		return apierr.New(http.StatusConflict, apierr.CodeConflict, "", "%v", err)
	}
	return apierr.New(http.StatusInternalServerError, apierr.CodeInternal, "", "%v", err)
}

// policyScope resolves the hook of a request and the scope it acts in.
func (h *handlers) policyScope(c echo.Context, write bool) (registry.Kind, string, *apierr.Error) {
	k, err := registry.ParseKind(c.Param("hook"))
	if err != nil || k == registry.KindNode {
		return "", "", apierr.New(http.StatusNotFound, apierr.CodeNotFound, "hook", "unknown policy hook %q (batching, eviction or quality)", c.Param("hook"))
	}
	p := h.who(c)
	if k.OperatorOnly() {
		if !p.Operator {
			return "", "", apierr.New(http.StatusForbidden, "forbidden", "hook", "%s policies are the operator's", k)
		}
		return k, "", nil
	}
	if p.Operator {
		return k, "", nil // the operator's quality policy serves tenants without their own
	}
	return k, p.Tenant, nil
}

const maxUpload = 16 << 20

func readModule(c echo.Context) ([]byte, *apierr.Error) {
	b, err := io.ReadAll(io.LimitReader(c.Request().Body, maxUpload+1))
	if err != nil {
		return nil, apierr.Invalid("", "reading the module: %v", err)
	}
	if len(b) > maxUpload {
		return nil, apierr.New(http.StatusRequestEntityTooLarge, apierr.CodeTooLarge, "", "module exceeds %d bytes", maxUpload)
	}
	if len(b) == 0 {
		return nil, apierr.Invalid("", "the request body must be the .wasm module")
	}
	return b, nil
}

type uploaded struct {
	Kind    registry.Kind      `json:"kind"`
	Name    string             `json:"name"`
	Mode    string             `json:"mode"`
	Version *registry.Version  `json:"version"`
	Slot    *registry.SlotInfo `json:"slot"`
}

func (h *handlers) upload(c echo.Context, kind registry.Kind, scope, name, defaultMode string) error {
	modeStr := c.QueryParam("mode")
	if modeStr == "" {
		modeStr = defaultMode
	}
	mode, err := registry.ParseMode(modeStr)
	if err != nil {
		return fail(c, apierr.Invalid("mode", "%v", err))
	}
	if kind == registry.KindNode && mode == registry.ModeShadow {
		return fail(c, apierr.Invalid("mode", "shadow mode is for policies"))
	}
	wasm, aerr := readModule(c)
	if aerr != nil {
		return fail(c, aerr)
	}
	ctx := c.Request().Context()
	v, err := h.w.Registry.Upload(ctx, registry.UploadRequest{Scope: scope, Kind: kind, Name: name, Wasm: wasm, Mode: mode})
	if err != nil {
		return fail(c, apiError(err))
	}
	slotName := ""
	if kind == registry.KindNode {
		slotName = name
	}
	slot, err := h.w.Registry.Slot(ctx, scope, kind, slotName)
	if err != nil {
		return fail(c, apiError(err))
	}
	if mode == registry.ModeStore {
		modeStr = "store"
	}
	return c.JSON(http.StatusCreated, uploaded{Kind: kind, Name: name, Mode: modeStr, Version: v, Slot: slot})
}

func (h *handlers) uploadPolicy(c echo.Context) error {
	k, scope, aerr := h.policyScope(c, true)
	if aerr != nil {
		return fail(c, aerr)
	}
	return h.upload(c, k, scope, c.Param("name"), "store")
}

func (h *handlers) policySlot(c echo.Context) error {
	k, scope, aerr := h.policyScope(c, false)
	if aerr != nil {
		return fail(c, aerr)
	}
	info, err := h.w.Registry.Slot(c.Request().Context(), scope, k, "")
	if err != nil {
		return fail(c, apiError(err))
	}
	return c.JSON(http.StatusOK, info)
}

type nameInfo struct {
	Kind     registry.Kind      `json:"kind"`
	Name     string             `json:"name"`
	Versions []registry.Version `json:"versions"`
	Slot     *registry.SlotInfo `json:"slot"`
}

func (h *handlers) describe(c echo.Context, kind registry.Kind, scope, name, slotName string) error {
	ctx := c.Request().Context()
	vs, err := h.w.Registry.Versions(ctx, scope, kind, name)
	if err != nil {
		return fail(c, apiError(err))
	}
	if len(vs) == 0 {
		return fail(c, apierr.NotFound(string(kind)+" "+strconv.Quote(name)))
	}
	slot, err := h.w.Registry.Slot(ctx, scope, kind, slotName)
	if err != nil {
		return fail(c, apiError(err))
	}
	return c.JSON(http.StatusOK, nameInfo{Kind: kind, Name: name, Versions: vs, Slot: slot})
}

func (h *handlers) policyName(c echo.Context) error {
	k, scope, aerr := h.policyScope(c, false)
	if aerr != nil {
		return fail(c, aerr)
	}
	return h.describe(c, k, scope, c.Param("name"), "")
}

type versionBody struct {
	Version int `json:"version"`
}

// versionOf reads an optional {"version": N} body, defaulting to the
// name's latest version.
func (h *handlers) versionOf(c echo.Context, kind registry.Kind, scope, name string) (registry.Ref, *apierr.Error) {
	var body versionBody
	if c.Request().ContentLength != 0 {
		if aerr := apierr.DecodeStrict(c.Request().Body, 1<<10, &body); aerr != nil && c.Request().ContentLength > 0 {
			return registry.Ref{}, aerr
		}
	}
	if body.Version == 0 {
		vs, err := h.w.Registry.Versions(c.Request().Context(), scope, kind, name)
		if err != nil {
			return registry.Ref{}, apiError(err)
		}
		if len(vs) == 0 {
			return registry.Ref{}, apierr.NotFound(string(kind) + " " + strconv.Quote(name))
		}
		body.Version = vs[len(vs)-1].Version
	}
	return registry.Ref{Name: name, Version: body.Version}, nil
}

func (h *handlers) activatePolicy(c echo.Context) error {
	k, scope, aerr := h.policyScope(c, true)
	if aerr != nil {
		return fail(c, aerr)
	}
	ref, aerr := h.versionOf(c, k, scope, c.Param("name"))
	if aerr != nil {
		return fail(c, aerr)
	}
	if err := h.w.Registry.Activate(c.Request().Context(), scope, k, ref); err != nil {
		return fail(c, apiError(err))
	}
	return h.policySlot(c)
}

func (h *handlers) shadowPolicy(c echo.Context) error {
	k, scope, aerr := h.policyScope(c, true)
	if aerr != nil {
		return fail(c, aerr)
	}
	ref, aerr := h.versionOf(c, k, scope, c.Param("name"))
	if aerr != nil {
		return fail(c, aerr)
	}
	if err := h.w.Registry.SetShadow(c.Request().Context(), scope, k, &ref); err != nil {
		return fail(c, apiError(err))
	}
	return h.policySlot(c)
}

func (h *handlers) endShadow(c echo.Context) error {
	k, scope, aerr := h.policyScope(c, true)
	if aerr != nil {
		return fail(c, aerr)
	}
	if err := h.w.Registry.SetShadow(c.Request().Context(), scope, k, nil); err != nil {
		return fail(c, apiError(err))
	}
	return h.policySlot(c)
}

func (h *handlers) rollbackPolicy(c echo.Context) error {
	k, scope, aerr := h.policyScope(c, true)
	if aerr != nil {
		return fail(c, aerr)
	}
	if _, err := h.w.Registry.Rollback(c.Request().Context(), scope, k, ""); err != nil {
		return fail(c, apiError(err))
	}
	return h.policySlot(c)
}

func (h *handlers) uploadNode(c echo.Context) error {
	return h.upload(c, registry.KindNode, h.who(c).Tenant, c.Param("name"), "activate")
}

type nodeEntry struct {
	Name    string        `json:"name"`
	Builtin bool          `json:"builtin,omitempty"`
	Hooks   []abi.Hook    `json:"hooks"`
	Active  *registry.Ref `json:"active,omitempty"`
}

func (h *handlers) listNodes(c echo.Context) error {
	ctx := c.Request().Context()
	tenant := h.who(c).Tenant
	var out []nodeEntry
	for _, n := range nodes.Names() {
		hook, _ := nodes.Hook(n)
		out = append(out, nodeEntry{Name: n, Builtin: true, Hooks: []abi.Hook{hook}})
	}
	names, err := h.w.Registry.Names(ctx, tenant, registry.KindNode)
	if err != nil {
		return fail(c, apiError(err))
	}
	for _, n := range names {
		e := nodeEntry{Name: n}
		if slot, err := h.w.Registry.Slot(ctx, tenant, registry.KindNode, n); err == nil {
			e.Active = slot.Active
		}
		if hooks, err := h.w.Registry.NodeHooks(ctx, tenant, n); err == nil {
			e.Hooks = hooks
		}
		out = append(out, e)
	}
	return c.JSON(http.StatusOK, map[string]any{"nodes": out})
}

func (h *handlers) nodeName(c echo.Context) error {
	n := c.Param("name")
	return h.describe(c, registry.KindNode, h.who(c).Tenant, n, n)
}

func (h *handlers) activateNode(c echo.Context) error {
	tenant, n := h.who(c).Tenant, c.Param("name")
	ref, aerr := h.versionOf(c, registry.KindNode, tenant, n)
	if aerr != nil {
		return fail(c, aerr)
	}
	if err := h.w.Registry.Activate(c.Request().Context(), tenant, registry.KindNode, ref); err != nil {
		return fail(c, apiError(err))
	}
	return h.nodeName(c)
}

func (h *handlers) rollbackNode(c echo.Context) error {
	tenant, n := h.who(c).Tenant, c.Param("name")
	if _, err := h.w.Registry.Rollback(c.Request().Context(), tenant, registry.KindNode, n); err != nil {
		return fail(c, apiError(err))
	}
	info, err := h.w.Registry.Slot(c.Request().Context(), tenant, registry.KindNode, n)
	if err != nil {
		return fail(c, apiError(err))
	}
	return c.JSON(http.StatusOK, info)
}
