// Package comfyui serves ComfyUI's HTTP and WebSocket API over Kiln's job
// flow. POST /prompt takes an API-format workflow, checks every node
// against the core nodes Kiln compiles (unsupported nodes are refused with
// their id and class) and turns each output node into one native job —
// validated, queued and authenticated like any other — keeping ComfyUI's
// seed semantics (one CPU generator for the batch). /history, /view,
// /queue, /interrupt, /object_info, /system_stats and /upload/image answer
// in ComfyUI's shapes, and /ws sends its status, execution_start,
// executing, progress, executed, execution_success, execution_error and
// execution_interrupted messages with binary preview frames. Prompts are
// kept in memory per tenant; finished ones (the history) are also
// persisted where the Backend is a StateStore, so /history survives a
// restart.
package comfyui

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/kiln-project/kiln/core/imagedecode"
	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/gateway/live"
	"github.com/kiln-project/kiln/gateway/validate"
	"github.com/kiln-project/kiln/internal/buildinfo"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/gpu"
	"github.com/kiln-project/kiln/server/jobs"
)

// Backend is what the handler needs from the gateway.
type Backend interface {
	// Submit validates and enqueues a job.
	Submit(ctx context.Context, p auth.Principal, r *validate.JobRequest, source string) (*jobs.Job, *apierr.Error)
	// Wait returns the job once it is final.
	Wait(ctx context.Context, tenant, id string) (*jobs.Job, error)
	// Cancel stops a job.
	Cancel(ctx context.Context, tenant, id string)
	// Image returns a stored PNG; PutImage stores one (uploads).
	Image(ctx context.Context, tenant, id string) ([]byte, error)
	PutImage(ctx context.Context, tenant, id string, data []byte) error
	// Models lists the servable models and names the default one.
	Models() (list []catalog.Model, def string)
	// Subscribe follows a tenant's job events and previews.
	Subscribe(tenant string, buf int) (<-chan live.Update, func())
	// GPUs reads the devices' memory (nil without GPUs).
	GPUs() []events.GPU
}

// Options configure a Handler.
type Options struct {
	Backend Backend
	// MaxBody bounds request bodies (uploads included).
	MaxBody int64
	// MaxPixels bounds uploaded images.
	MaxPixels int
	// OriginPatterns are the WebSocket origins allowed besides the host.
	OriginPatterns []string
	// History is how many finished prompts are kept per tenant.
	History int
}

// Handler serves the API. It is safe for concurrent use.
type Handler struct {
	o      Options
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	number  int
	prompts map[string]*tenantPrompts
	sockets map[string]map[*socket]struct{}
	// loaded marks tenants whose persisted history was read.
	loaded map[string]bool
}

type tenantPrompts struct {
	byID  map[string]*prompt
	order []*prompt // submission order
}

// prompt is one queued workflow and what became of it.
type prompt struct {
	id, tenant, clientID string
	number               int
	graph                Graph
	plans                []plan
	jobs                 []string // one native job per plan
	// Guarded by Handler.mu:
	status  string // "pending", "running", "success", "error", "interrupted"
	outputs map[string]any
}

// New returns a handler; Close ends its work.
func New(o Options) *Handler {
	if o.History <= 0 {
		o.History = 200
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Handler{o: o, ctx: ctx, cancel: cancel, prompts: map[string]*tenantPrompts{}, sockets: map[string]map[*socket]struct{}{},
		loaded: map[string]bool{}}
}

// Close stops following prompts and closes the sockets.
func (h *Handler) Close() {
	h.cancel()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, set := range h.sockets {
		for s := range set {
			s.close()
		}
	}
}

// Route is one endpoint of the API.
type Route struct {
	Method, Path string
	// Handle serves an authenticated request; params are the path's.
	Handle func(w http.ResponseWriter, r *http.Request, p auth.Principal, params map[string]string)
	// Summary, Request and Response describe the route for the OpenAPI
	// document (Request and Response: example values of the body types).
	Summary           string
	Request, Response any
}

// Routes lists the endpoints.
func (h *Handler) Routes() []Route {
	return []Route{
		{http.MethodPost, "/prompt", h.postPrompt, "Queue an API-format workflow (ComfyUI)", PromptRequest{}, PromptResponse{}},
		{http.MethodGet, "/prompt", h.getPrompt, "Queue status (ComfyUI)", nil, map[string]any{}},
		{http.MethodGet, "/history", h.history, "Finished prompts (ComfyUI)", nil, map[string]HistoryEntry{}},
		{http.MethodGet, "/history/{prompt_id}", h.history, "One finished prompt (ComfyUI)", nil, map[string]HistoryEntry{}},
		{http.MethodGet, "/view", h.view, "An output image by filename (ComfyUI)", nil, nil},
		{http.MethodGet, "/object_info", h.objectInfo, "The node classes Kiln compiles (ComfyUI)", nil, map[string]any{}},
		{http.MethodGet, "/object_info/{node_class}", h.objectInfo, "One node class (ComfyUI)", nil, map[string]any{}},
		{http.MethodGet, "/queue", h.queue, "Running and pending prompts (ComfyUI)", nil, QueueResponse{}},
		{http.MethodPost, "/interrupt", h.interrupt, "Stop the tenant's running prompts (ComfyUI)", nil, struct{}{}},
		{http.MethodGet, "/system_stats", h.systemStats, "System and device memory (ComfyUI)", nil, SystemStats{}},
		{http.MethodPost, "/upload/image", h.upload, "Upload an image for Load Image (ComfyUI, multipart form field \"image\")", nil, UploadResponse{}},
		{http.MethodGet, "/ws", h.websocket, "Progress, execution messages and binary preview frames (ComfyUI)", nil, nil},
	}
}

// errorBody is ComfyUI's error response.
type errorBody struct {
	Error      ErrorItem            `json:"error"`
	NodeErrors map[string]NodeError `json:"node_errors"`
}

// WriteError sends a native API error in ComfyUI's shape.
func WriteError(w http.ResponseWriter, e *apierr.Error) {
	extra := map[string]any{}
	if len(e.Allowed) > 0 {
		extra["allowed"] = e.Allowed
	}
	body := errorBody{Error: ErrorItem{Type: e.Code, Message: e.Message, Details: e.Field, ExtraInfo: extra},
		NodeErrors: map[string]NodeError{}}
	apierr.SetHeaders(w, e)
	writeJSON(w, e.Status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ---- prompts ----

// PromptRequest is the body of POST /prompt.
type PromptRequest struct {
	Prompt    Graph          `json:"prompt"`
	ClientID  string         `json:"client_id,omitempty"`
	Number    *int           `json:"number,omitempty"`
	Front     bool           `json:"front,omitempty"`
	ExtraData map[string]any `json:"extra_data,omitempty"`
	PromptID  string         `json:"prompt_id,omitempty"`
}

// PromptResponse answers POST /prompt.
type PromptResponse struct {
	PromptID   string               `json:"prompt_id"`
	Number     int                  `json:"number"`
	NodeErrors map[string]NodeError `json:"node_errors"`
}

// modelResolver finds a servable model for a ckpt_name ("name",
// "name.safetensors", "folder/name.safetensors").
func (h *Handler) modelResolver() func(string) (string, error) {
	list, _ := h.o.Backend.Models()
	return func(ckpt string) (string, error) {
		base := ckpt
		if i := strings.LastIndexAny(base, `/\`); i >= 0 {
			base = base[i+1:]
		}
		var names []string
		for _, m := range list {
			names = append(names, m.Name)
			if m.Name == ckpt || m.Name == base || m.Name == strings.TrimSuffix(base, ".safetensors") {
				return m.Name, nil
			}
		}
		return "", fmt.Errorf("checkpoint %q is not a Kiln model; choose one of %s", ckpt, strings.Join(names, ", "))
	}
}

func (h *Handler) defs() map[string]nodeDef {
	list, _ := h.o.Backend.Models()
	names := make([]string, 0, len(list))
	for _, m := range list {
		names = append(names, m.Name)
	}
	return nodeDefs(names)
}

func (h *Handler) postPrompt(w http.ResponseWriter, r *http.Request, p auth.Principal, _ map[string]string) {
	var req PromptRequest
	if err := apierr.DecodeStrict(r.Body, h.o.MaxBody, &req); err != nil {
		WriteError(w, err)
		return
	}
	h.load(r.Context(), p.Tenant)
	if len(req.Prompt) == 0 {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: ErrorItem{Type: "no_prompt", Message: "No prompt provided",
			ExtraInfo: map[string]any{}}, NodeErrors: map[string]NodeError{}})
		return
	}
	plans, cerr := compile(req.Prompt, h.defs(), h.modelResolver())
	if cerr != nil {
		writeCompileError(w, cerr)
		return
	}
	id := req.PromptID
	if id == "" {
		id = newPromptID()
	} else if !validPromptID(id) {
		WriteError(w, apierr.Invalid("prompt_id", "prompt_id must be 1-64 letters, digits, '-' or '_'"))
		return
	}
	pr := &prompt{id: id, tenant: p.Tenant, clientID: req.ClientID, graph: req.Prompt, plans: plans, status: "pending",
		outputs: map[string]any{}}
	// Read the init images and submit every plan before answering.
	updates, unsubscribe := h.o.Backend.Subscribe(p.Tenant, 256)
	for i := range plans {
		jr := plans[i].req
		if plans[i].initImage != "" {
			data, err := h.loadImage(r.Context(), p.Tenant, plans[i].initImage)
			if err != nil {
				unsubscribe()
				h.cancelJobs(p.Tenant, pr.jobs)
				writeCompileError(w, &compileError{node: loadNode(req.Prompt, plans[i].initImage), class: "LoadImage", input: "image",
					kind: "value_not_valid", msg: err.Error()})
				return
			}
			jr.InitImage = base64.StdEncoding.EncodeToString(data)
			if plans[i].inpaint != nil {
				if cerr := h.applyInpaint(r.Context(), p.Tenant, &plans[i], &jr, data); cerr != nil {
					unsubscribe()
					h.cancelJobs(p.Tenant, pr.jobs)
					cerr.class = req.Prompt[cerr.node].ClassType
					writeCompileError(w, cerr)
					return
				}
			}
		}
		job, aerr := h.o.Backend.Submit(r.Context(), p, &jr, "comfyui")
		if aerr != nil {
			unsubscribe()
			h.cancelJobs(p.Tenant, pr.jobs)
			writeCompileError(w, &compileError{node: plans[i].sampler, class: req.Prompt[plans[i].sampler].ClassType,
				input: aerr.Field, kind: "value_not_valid", msg: aerr.Message})
			return
		}
		pr.jobs = append(pr.jobs, job.ID)
	}
	h.mu.Lock()
	if _, dup := h.tenant(p.Tenant).byID[id]; dup {
		h.mu.Unlock()
		unsubscribe()
		h.cancelJobs(p.Tenant, pr.jobs)
		WriteError(w, apierr.New(http.StatusConflict, apierr.CodeConflict, "prompt_id", "prompt %s exists", id))
		return
	}
	h.number++
	pr.number = h.number
	dropped := h.add(pr)
	h.mu.Unlock()
	h.forget(p.Tenant, dropped)
	go h.follow(pr, updates, unsubscribe)
	h.broadcastStatus(p.Tenant)
	writeJSON(w, http.StatusOK, PromptResponse{PromptID: id, Number: pr.number, NodeErrors: map[string]NodeError{}})
}

func (h *Handler) cancelJobs(tenant string, ids []string) {
	for _, id := range ids {
		h.o.Backend.Cancel(context.Background(), tenant, id)
	}
}

// loadNode finds the LoadImage node naming an image.
func loadNode(g Graph, name string) string {
	for id, n := range g {
		if n.ClassType == "LoadImage" {
			var v string
			if json.Unmarshal(n.Inputs["image"], &v) == nil && v == name {
				return id
			}
		}
	}
	return ""
}

func writeCompileError(w http.ResponseWriter, e *compileError) {
	body := errorBody{NodeErrors: map[string]NodeError{}}
	extra := map[string]any{}
	if e.input != "" {
		extra["input_name"] = e.input
	}
	item := ErrorItem{Type: e.kind, Message: e.Error(), Details: e.msg, ExtraInfo: extra}
	if e.node == "" {
		body.Error = item
	} else {
		body.Error = ErrorItem{Type: "prompt_outputs_failed_validation", Message: "Prompt outputs failed validation",
			Details: e.Error(), ExtraInfo: map[string]any{"node_id": e.node, "class_type": e.class}}
		if e.kind == "invalid_prompt" {
			body.Error = ErrorItem{Type: "invalid_prompt", Message: e.Error(), Details: fmt.Sprintf("Node ID '#%s'", e.node),
				ExtraInfo: map[string]any{"node_id": e.node, "class_type": e.class}}
		}
		body.NodeErrors[e.node] = NodeError{Errors: []ErrorItem{item}, DependentOutput: []string{}, ClassType: e.class}
	}
	writeJSON(w, http.StatusBadRequest, body)
}

// tenant returns a tenant's prompts; h.mu is held.
func (h *Handler) tenant(t string) *tenantPrompts {
	tp := h.prompts[t]
	if tp == nil {
		tp = &tenantPrompts{byID: map[string]*prompt{}}
		h.prompts[t] = tp
	}
	return tp
}

// add records a prompt, dropping the oldest finished ones beyond the
// history size (their ids are returned); h.mu is held.
func (h *Handler) add(pr *prompt) (dropped []string) {
	tp := h.tenant(pr.tenant)
	tp.byID[pr.id] = pr
	tp.order = append(tp.order, pr)
	for len(tp.order) > h.o.History {
		drop := -1
		for i, old := range tp.order {
			if old.status != "pending" && old.status != "running" {
				drop = i
				break
			}
		}
		if drop < 0 {
			break
		}
		delete(tp.byID, tp.order[drop].id)
		dropped = append(dropped, tp.order[drop].id)
		tp.order = append(tp.order[:drop], tp.order[drop+1:]...)
	}
	return dropped
}

// follow turns a prompt's job events into ComfyUI messages until its
// jobs are final.
func (h *Handler) follow(pr *prompt, updates <-chan live.Update, unsubscribe func()) {
	defer unsubscribe()
	ctx := h.ctx
	type final struct {
		i   int
		job *jobs.Job
		err error
	}
	finals := make(chan final, len(pr.jobs))
	for i, id := range pr.jobs {
		go func() {
			j, err := h.o.Backend.Wait(ctx, pr.tenant, id)
			finals <- final{i, j, err}
		}()
	}
	index := map[string]int{}
	for i, id := range pr.jobs {
		index[id] = i
	}
	started := false
	start := func() {
		if started {
			return
		}
		started = true
		h.setStatus(pr, "running")
		h.send(pr, "execution_start", map[string]any{"prompt_id": pr.id, "timestamp": time.Now().UnixMilli()})
		h.send(pr, "execution_cached", map[string]any{"nodes": []string{}, "prompt_id": pr.id, "timestamp": time.Now().UnixMilli()})
	}
	current := -1
	results := make([]*jobs.Job, len(pr.jobs))
	for remaining := len(pr.jobs); remaining > 0; {
		select {
		case <-ctx.Done():
			return
		case u := <-updates:
			if u.Event != nil {
				i, ok := index[u.Event.Job]
				if !ok {
					continue
				}
				switch u.Event.Type {
				case events.TypeStarted, events.TypeProgress:
					start()
					if current != i {
						current = i
						h.send(pr, "executing", map[string]any{"node": pr.plans[i].sampler, "display_node": pr.plans[i].sampler, "prompt_id": pr.id})
					}
					if u.Event.Type == events.TypeProgress {
						h.send(pr, "progress", map[string]any{"value": u.Event.Step, "max": u.Event.Steps, "prompt_id": pr.id, "node": pr.plans[i].sampler})
					}
				}
			}
			if u.Preview != nil {
				if _, ok := index[u.Preview.Job]; ok {
					h.sendPreview(pr, u.Preview.JPEG)
				}
			}
		case f := <-finals:
			remaining--
			if f.err != nil {
				return // shutting down
			}
			results[f.i] = f.job
			start()
			switch f.job.Status {
			case jobs.StatusSucceeded:
				plan := pr.plans[f.i]
				images := make([]map[string]any, 0, len(f.job.Images))
				for _, im := range f.job.Images {
					typ := "output"
					if plan.outputClass == "PreviewImage" {
						typ = "temp"
					}
					images = append(images, map[string]any{"filename": im.ID + ".png", "subfolder": "", "type": typ})
				}
				out := map[string]any{"images": images}
				h.mu.Lock()
				pr.outputs[plan.output] = out
				h.mu.Unlock()
				h.send(pr, "executing", map[string]any{"node": plan.output, "display_node": plan.output, "prompt_id": pr.id})
				h.send(pr, "executed", map[string]any{"node": plan.output, "display_node": plan.output, "output": out, "prompt_id": pr.id})
			}
		}
	}
	// The prompt's outcome: the first failure or cancellation decides.
	status := "success"
	for i, j := range results {
		plan := pr.plans[i]
		switch j.Status {
		case jobs.StatusFailed:
			msg := "the job failed"
			if j.Error != nil {
				msg = j.Error.Message
			}
			if status == "success" {
				status = "error"
				h.send(pr, "execution_error", map[string]any{"prompt_id": pr.id, "node_id": plan.sampler, "node_type": pr.graph[plan.sampler].ClassType,
					"executed": []string{}, "exception_message": msg, "exception_type": "KilnJobError", "traceback": []string{},
					"current_inputs": map[string]any{}, "current_outputs": map[string]any{}, "timestamp": time.Now().UnixMilli()})
			}
		case jobs.StatusCanceled:
			if status == "success" {
				status = "interrupted"
				h.send(pr, "execution_interrupted", map[string]any{"prompt_id": pr.id, "node_id": plan.sampler,
					"node_type": pr.graph[plan.sampler].ClassType, "executed": []string{}, "timestamp": time.Now().UnixMilli()})
			}
		}
	}
	if status == "success" {
		h.send(pr, "execution_success", map[string]any{"prompt_id": pr.id, "timestamp": time.Now().UnixMilli()})
	}
	h.persist(pr, status) // before /history shows it: a restart keeps what a client saw
	h.setStatus(pr, status)
	h.send(pr, "executing", map[string]any{"node": nil, "prompt_id": pr.id})
	h.broadcastStatus(pr.tenant)
}

func (h *Handler) setStatus(pr *prompt, status string) {
	h.mu.Lock()
	pr.status = status
	h.mu.Unlock()
}

// newPromptID makes a prompt or client id.
func newPromptID() string { return jobs.NewID() }

func validPromptID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (h *Handler) getPrompt(w http.ResponseWriter, r *http.Request, p auth.Principal, _ map[string]string) {
	writeJSON(w, http.StatusOK, map[string]any{"exec_info": map[string]any{"queue_remaining": h.remaining(p.Tenant)}})
}

// remaining counts the tenant's unfinished prompts.
func (h *Handler) remaining(tenant string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	if tp := h.prompts[tenant]; tp != nil {
		for _, pr := range tp.order {
			if pr.status == "pending" || pr.status == "running" {
				n++
			}
		}
	}
	return n
}

// HistoryEntry is one prompt in /history.
type HistoryEntry struct {
	// Prompt is [number, prompt_id, graph, extra_data, output node ids].
	Prompt  []any          `json:"prompt"`
	Outputs map[string]any `json:"outputs"`
	Status  HistoryStatus  `json:"status"`
	Meta    map[string]any `json:"meta"`
}

// HistoryStatus is a finished prompt's outcome.
type HistoryStatus struct {
	StatusStr string  `json:"status_str"`
	Completed bool    `json:"completed"`
	Messages  [][]any `json:"messages"`
}

func (pr *prompt) queueItem() []any {
	outs := make([]string, 0, len(pr.plans))
	for _, p := range pr.plans {
		outs = append(outs, p.output)
	}
	return []any{pr.number, pr.id, pr.graph, map[string]any{"client_id": pr.clientID}, outs}
}

func (h *Handler) history(w http.ResponseWriter, r *http.Request, p auth.Principal, params map[string]string) {
	h.load(r.Context(), p.Tenant)
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]HistoryEntry{}
	tp := h.prompts[p.Tenant]
	if tp == nil {
		writeJSON(w, http.StatusOK, out)
		return
	}
	entry := func(pr *prompt) {
		if pr.status == "pending" || pr.status == "running" {
			return // ComfyUI's history holds finished prompts
		}
		outputs := map[string]any{}
		for k, v := range pr.outputs {
			outputs[k] = v
		}
		out[pr.id] = HistoryEntry{Prompt: pr.queueItem(), Outputs: outputs, Meta: map[string]any{},
			Status: HistoryStatus{StatusStr: pr.status, Completed: pr.status == "success", Messages: [][]any{}}}
	}
	if id := params["prompt_id"]; id != "" {
		if pr := tp.byID[id]; pr != nil {
			entry(pr)
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	limit := len(tp.order)
	if s := r.URL.Query().Get("max_items"); s != "" {
		var n int
		if _, err := fmt.Sscan(s, &n); err != nil || n < 1 {
			WriteError(w, apierr.Invalid("max_items", "max_items must be a positive integer"))
			return
		}
		limit = min(limit, n)
	}
	for i := len(tp.order) - 1; i >= 0 && len(out) < limit; i-- {
		entry(tp.order[i])
	}
	writeJSON(w, http.StatusOK, out)
}

// QueueResponse is /queue: the tenant's running and pending prompts as
// [number, prompt_id, graph, extra_data, output node ids].
type QueueResponse struct {
	QueueRunning [][]any `json:"queue_running"`
	QueuePending [][]any `json:"queue_pending"`
}

func (h *Handler) queue(w http.ResponseWriter, r *http.Request, p auth.Principal, _ map[string]string) {
	h.mu.Lock()
	out := QueueResponse{QueueRunning: [][]any{}, QueuePending: [][]any{}}
	if tp := h.prompts[p.Tenant]; tp != nil {
		for _, pr := range tp.order {
			switch pr.status {
			case "running":
				out.QueueRunning = append(out.QueueRunning, pr.queueItem())
			case "pending":
				out.QueuePending = append(out.QueuePending, pr.queueItem())
			}
		}
	}
	h.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// interrupt cancels the tenant's running prompts (or the one named by
// {"prompt_id"}).
func (h *Handler) interrupt(w http.ResponseWriter, r *http.Request, p auth.Principal, _ map[string]string) {
	var req struct {
		PromptID string `json:"prompt_id"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4096))
	if err == nil && len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			WriteError(w, apierr.Invalid("", "invalid JSON: %v", err))
			return
		}
	}
	h.mu.Lock()
	var ids []string
	if tp := h.prompts[p.Tenant]; tp != nil {
		for _, pr := range tp.order {
			if pr.status == "running" && (req.PromptID == "" || req.PromptID == pr.id) {
				ids = append(ids, pr.jobs...)
			}
		}
	}
	h.mu.Unlock()
	for _, id := range ids {
		h.o.Backend.Cancel(r.Context(), p.Tenant, id)
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// ---- images ----

// view serves an output image by its filename ("<image id>.png").
func (h *Handler) view(w http.ResponseWriter, r *http.Request, p auth.Principal, _ map[string]string) {
	q := r.URL.Query()
	name := q.Get("filename")
	if name == "" {
		WriteError(w, apierr.Invalid("filename", "filename is required"))
		return
	}
	if sub := q.Get("subfolder"); sub != "" {
		WriteError(w, apierr.NotFound("image"))
		return
	}
	id := strings.TrimSuffix(name, ".png")
	if !validImageID(id) {
		WriteError(w, apierr.NotFound("image"))
		return
	}
	data, err := h.o.Backend.Image(r.Context(), p.Tenant, id)
	if err != nil {
		WriteError(w, apierr.NotFound("image"))
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`filename="%s.png"`, id))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

// loadImage reads a LoadImage file: an upload or an output image.
func (h *Handler) loadImage(ctx context.Context, tenant, name string) ([]byte, error) {
	name = strings.TrimSuffix(strings.TrimSuffix(name, " [output]"), " [input]")
	id := strings.TrimSuffix(name, ".png")
	if !validImageID(id) {
		return nil, fmt.Errorf("image %q was not uploaded to Kiln (POST /upload/image) nor made by it", name)
	}
	data, err := h.o.Backend.Image(ctx, tenant, id)
	if err != nil {
		return nil, fmt.Errorf("image %q not found", name)
	}
	return data, nil
}

// validImageID accepts an image id ("<id>-<index>", generated images and
// uploads alike).
func validImageID(id string) bool {
	_, _, ok := jobs.ParseImageID(id)
	return ok
}

// UploadResponse answers /upload/image.
type UploadResponse struct {
	Name      string `json:"name"`
	Subfolder string `json:"subfolder"`
	Type      string `json:"type"`
}

// upload stores an image (PNG or JPEG) for Load Image, re-encoded as PNG
// under a new name.
func (h *Handler) upload(w http.ResponseWriter, r *http.Request, p auth.Principal, _ map[string]string) {
	r.Body = http.MaxBytesReader(w, r.Body, h.o.MaxBody)
	if err := r.ParseMultipartForm(min(h.o.MaxBody, 32<<20)); err != nil {
		WriteError(w, apierr.Invalid("image", "a multipart form with an \"image\" file is required: %v", err))
		return
	}
	defer r.MultipartForm.RemoveAll()
	f, _, err := r.FormFile("image")
	if err != nil {
		WriteError(w, apierr.Invalid("image", "the form has no \"image\" file"))
		return
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		WriteError(w, apierr.Invalid("image", "reading the upload: %v", err))
		return
	}
	// Sides, pixels and decoded size come from the header, before any
	// decoding (a decode may take at most 4 bytes per allowed pixel).
	lim := imagedecode.Limits{MaxPixels: int64(h.o.MaxPixels), MaxSide: validate.MaxSide, MaxBytes: 4 * int64(h.o.MaxPixels)}
	cfg, err := imagedecode.Header(data)
	if err != nil {
		WriteError(w, apierr.Invalid("image", "the upload is not a PNG or JPEG image"))
		return
	}
	if err := lim.Check(cfg); err != nil {
		WriteError(w, apierr.Limit("image", "the image is %d×%d with %d channel(s) of %d bits; the limit is %d pixels, %d bytes decoded",
			cfg.Width, cfg.Height, cfg.Channels, cfg.BitDepth, h.o.MaxPixels, lim.MaxBytes))
		return
	}
	if cfg.Format == "jpeg" { // stored and served as PNG, as every Kiln image is
		img, _, err := imagedecode.Decode(r.Context(), data, lim, nil)
		if err != nil {
			WriteError(w, apierr.Invalid("image", "the JPEG does not decode: %v", err))
			return
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			WriteError(w, apierr.New(http.StatusInternalServerError, apierr.CodeInternal, "", "re-encoding the upload: %v", err))
			return
		}
		data = buf.Bytes()
	}
	id := jobs.NewID() + "-0" // an image id no job makes
	if err := h.o.Backend.PutImage(r.Context(), p.Tenant, id, data); err != nil {
		WriteError(w, apierr.New(http.StatusServiceUnavailable, apierr.CodeUnavailable, "", "storing the upload failed; retry"))
		return
	}
	writeJSON(w, http.StatusOK, UploadResponse{Name: id + ".png", Type: "input"})
}

// ---- catalogs ----

func (h *Handler) objectInfo(w http.ResponseWriter, r *http.Request, p auth.Principal, params map[string]string) {
	info := objectInfo(h.defs())
	if name := params["node_class"]; name != "" {
		out := map[string]any{}
		if d, ok := info[name]; ok {
			out[name] = d
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// SystemStats is /system_stats.
type SystemStats struct {
	System  map[string]any   `json:"system"`
	Devices []map[string]any `json:"devices"`
}

func (h *Handler) systemStats(w http.ResponseWriter, r *http.Request, p auth.Principal, _ map[string]string) {
	total, avail := gpu.MemInfo()
	out := SystemStats{System: map[string]any{"os": runtime.GOOS, "ram_total": total, "ram_free": avail,
		"comfyui_version": "kiln " + buildinfo.Version(), "python_version": "", "pytorch_version": "", "embedded_python": false,
		"argv": []string{}}, Devices: []map[string]any{}}
	for _, g := range h.o.Backend.GPUs() {
		out.Devices = append(out.Devices, map[string]any{"name": g.Name, "type": "cuda", "index": g.Index,
			"vram_total": g.MemoryTotal, "vram_free": g.MemoryTotal - g.MemoryUsed,
			"torch_vram_total": g.MemoryTotal, "torch_vram_free": g.MemoryTotal - g.MemoryUsed})
	}
	if len(out.Devices) == 0 {
		out.Devices = append(out.Devices, map[string]any{"name": "cpu", "type": "cpu", "index": nil,
			"vram_total": total, "vram_free": avail, "torch_vram_total": total, "torch_vram_free": avail})
	}
	writeJSON(w, http.StatusOK, out)
}

// ---- WebSocket ----

// socket is one /ws connection.
type socket struct {
	clientID string
	out      chan wsMsg
	once     sync.Once
	done     chan struct{}
}

type wsMsg struct {
	binary bool
	data   []byte
}

func (s *socket) close() { s.once.Do(func() { close(s.done) }) }

// push queues a message; a socket that cannot keep up is closed.
func (s *socket) push(m wsMsg) {
	select {
	case s.out <- m:
	case <-s.done:
	default:
		s.close()
	}
}

func (h *Handler) websocket(w http.ResponseWriter, r *http.Request, p auth.Principal, _ map[string]string) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: h.o.OriginPatterns})
	if err != nil {
		return
	}
	clientID := r.URL.Query().Get("clientId")
	if clientID == "" {
		clientID = newPromptID()
	}
	s := &socket{clientID: clientID, out: make(chan wsMsg, 256), done: make(chan struct{})}
	h.mu.Lock()
	if h.sockets[p.Tenant] == nil {
		h.sockets[p.Tenant] = map[*socket]struct{}{}
	}
	h.sockets[p.Tenant][s] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.sockets[p.Tenant], s)
		if len(h.sockets[p.Tenant]) == 0 {
			delete(h.sockets, p.Tenant)
		}
		h.mu.Unlock()
		s.close()
	}()
	s.push(wsMsg{data: h.statusMessage(p.Tenant, clientID)})
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	go func() { // the client sends nothing ComfyUI acts on; read to see it go
		defer s.close()
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
	}()
	for {
		select {
		case <-s.done:
			c.Close(websocket.StatusGoingAway, "")
			return
		case <-ctx.Done():
			c.Close(websocket.StatusGoingAway, "server shutting down")
			return
		case m := <-s.out:
			typ := websocket.MessageText
			if m.binary {
				typ = websocket.MessageBinary
			}
			wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.Write(wctx, typ, m.data)
			wcancel()
			if err != nil {
				return
			}
		}
	}
}

func (h *Handler) statusMessage(tenant, sid string) []byte {
	data := map[string]any{"status": map[string]any{"exec_info": map[string]any{"queue_remaining": h.remaining(tenant)}}}
	if sid != "" {
		data["sid"] = sid
	}
	b, _ := json.Marshal(map[string]any{"type": "status", "data": data})
	return b
}

// targets are the sockets a prompt's messages go to: its client's, or
// all of the tenant's when it named none (as ComfyUI does).
func (h *Handler) targets(tenant, clientID string) []*socket {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*socket
	for s := range h.sockets[tenant] {
		if clientID == "" || s.clientID == clientID {
			out = append(out, s)
		}
	}
	return out
}

func (h *Handler) send(pr *prompt, typ string, data map[string]any) {
	b, _ := json.Marshal(map[string]any{"type": typ, "data": data})
	for _, s := range h.targets(pr.tenant, pr.clientID) {
		s.push(wsMsg{data: b})
	}
}

// sendPreview sends ComfyUI's binary preview frame: event type 1
// (PREVIEW_IMAGE) and image type 1 (JPEG), big-endian, then the JPEG.
func (h *Handler) sendPreview(pr *prompt, jpeg []byte) {
	frame := make([]byte, 8+len(jpeg))
	binary.BigEndian.PutUint32(frame[0:], 1)
	binary.BigEndian.PutUint32(frame[4:], 1)
	copy(frame[8:], jpeg)
	for _, s := range h.targets(pr.tenant, pr.clientID) {
		s.push(wsMsg{binary: true, data: frame})
	}
}

func (h *Handler) broadcastStatus(tenant string) {
	b := h.statusMessage(tenant, "")
	for _, s := range h.targets(tenant, "") {
		s.push(wsMsg{data: b})
	}
}

// IsPath reports whether a request path belongs to this API (for error
// shapes).
func IsPath(path string) bool {
	switch path {
	case "/prompt", "/history", "/view", "/object_info", "/queue", "/interrupt", "/system_stats", "/upload/image", "/ws":
		return true
	}
	return strings.HasPrefix(path, "/history/") || strings.HasPrefix(path, "/object_info/")
}
