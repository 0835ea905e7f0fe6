// Package a1111 serves AUTOMATIC1111's web API (/sdapi/v1/...) over Kiln's
// job flow: txt2img and img2img become native jobs (validated, queued and
// authenticated like any other), answered in A1111's shapes — base64
// images, the request echoed as "parameters", the generation info as a
// JSON string "info" — with A1111's sampler and scheduler names mapped to
// Kiln's. Options (model, clip skip) are kept per tenant
// (persisted where the Backend is a StateStore); progress shows
// the tenant's current job with its latest preview; interrupt and skip
// cancel jobs; png-info reads the "parameters" chunk back.
package a1111

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"math"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/core/sample"
	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/gateway/jobwatch"
	"github.com/kiln-project/kiln/gateway/live"
	"github.com/kiln-project/kiln/gateway/validate"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/gpu"
	"github.com/kiln-project/kiln/server/jobs"
)

// Prefix is where the API is mounted.
const Prefix = "/sdapi/v1"

// Backend is what the handler needs from the gateway.
type Backend interface {
	// Submit validates and enqueues a job.
	Submit(ctx context.Context, p auth.Principal, r *validate.JobRequest, source string) (*jobs.Job, *apierr.Error)
	// Wait returns the job once it is final.
	Wait(ctx context.Context, tenant, id string) (*jobs.Job, error)
	// Cancel stops a job.
	Cancel(ctx context.Context, tenant, id string)
	// Image returns a stored PNG.
	Image(ctx context.Context, tenant, id string) ([]byte, error)
	// Models lists the servable models and names the default one.
	Models() (list []catalog.Model, def string)
	// ModelHash returns a model's full SHA-256 (see core/modelhash), or
	// "" when it is not known within ctx.
	ModelHash(ctx context.Context, name string) string
	// Live returns what was last heard of a running job.
	Live(tenant, job string) (live.State, bool)
	// GPUs reads the devices' memory (nil without GPUs).
	GPUs() []events.GPU
}

// Handler serves the API. It is safe for concurrent use.
type Handler struct {
	b       Backend
	maxBody int64
	timeout time.Duration

	mu      sync.Mutex
	options map[string]*tenantOptions
	active  map[string][]*activeJob // per tenant, in submission order
}

// tenantOptions are a tenant's A1111 options.
type tenantOptions struct {
	model    string // "" = the server's default
	clipSkip int    // A1111's CLIP_stop_at_last_layers (1 = last layer)
}

// activeJob is a generation a request is waiting for.
type activeJob struct {
	id          string
	interrupted bool
	skipped     bool
	timestamp   string
}

// New returns a handler; timeout bounds how long a generation request
// waits for its images.
func New(b Backend, maxBody int64, timeout time.Duration) *Handler {
	return &Handler{b: b, maxBody: maxBody, timeout: timeout, options: map[string]*tenantOptions{}, active: map[string][]*activeJob{}}
}

// Route is one endpoint of the API.
type Route struct {
	Method, Path string
	// Handle serves an authenticated request.
	Handle func(w http.ResponseWriter, r *http.Request, p auth.Principal)
	// Summary describes the route (for the OpenAPI document).
	Summary string
	// Request and Response are example values of the bodies' types (nil:
	// none), for the OpenAPI document.
	Request, Response any
}

// Routes lists the endpoints, with paths under Prefix.
func (h *Handler) Routes() []Route {
	return []Route{
		{http.MethodPost, Prefix + "/txt2img", h.txt2img, "Text to image (AUTOMATIC1111)", GenerationRequest{}, GenerationResponse{}},
		{http.MethodPost, Prefix + "/img2img", h.img2img, "Image to image (AUTOMATIC1111)", GenerationRequest{}, GenerationResponse{}},
		{http.MethodGet, Prefix + "/options", h.getOptions, "The tenant's options (AUTOMATIC1111)", nil, Options{}},
		{http.MethodPost, Prefix + "/options", h.setOptions, "Set the tenant's options (AUTOMATIC1111)", Options{}, struct{}{}},
		{http.MethodGet, Prefix + "/sd-models", h.sdModels, "Checkpoints (AUTOMATIC1111)", nil, []SDModel{}},
		{http.MethodGet, Prefix + "/samplers", h.samplers, "Samplers (AUTOMATIC1111)", nil, []SamplerItem{}},
		{http.MethodGet, Prefix + "/schedulers", h.schedulers, "Schedule types (AUTOMATIC1111)", nil, []SchedulerItem{}},
		{http.MethodGet, Prefix + "/loras", h.loras, "LoRA networks (AUTOMATIC1111)", nil, []LoraItem{}},
		{http.MethodGet, Prefix + "/embeddings", h.embeddings, "Textual inversion embeddings (AUTOMATIC1111)", nil, EmbeddingsResponse{}},
		{http.MethodGet, Prefix + "/upscalers", h.upscalers, "Upscalers (AUTOMATIC1111)", nil, []UpscalerItem{}},
		{http.MethodGet, Prefix + "/memory", h.memory, "Memory use (AUTOMATIC1111)", nil, MemoryResponse{}},
		{http.MethodGet, Prefix + "/progress", h.progress, "Progress of the current generation with a preview (AUTOMATIC1111)", nil, ProgressResponse{}},
		{http.MethodPost, Prefix + "/interrupt", h.interrupt, "Stop the tenant's generations (AUTOMATIC1111)", nil, struct{}{}},
		{http.MethodPost, Prefix + "/skip", h.skip, "Skip the tenant's current generation (AUTOMATIC1111)", nil, struct{}{}},
		{http.MethodPost, Prefix + "/png-info", h.pngInfo, "Read generation parameters from a PNG (AUTOMATIC1111)", PNGInfoRequest{}, PNGInfoResponse{}},
	}
}

// ErrorBody is the error shape of the API (FastAPI's "detail" plus Kiln's
// code, field and, for 405, the allowed methods).
type ErrorBody struct {
	Error   string   `json:"error"`
	Detail  string   `json:"detail"`
	Field   string   `json:"field,omitempty"`
	Allowed []string `json:"allowed,omitempty"`
}

// WriteError sends an API error in this API's shape.
func WriteError(w http.ResponseWriter, e *apierr.Error) {
	apierr.SetHeaders(w, e)
	writeJSON(w, e.Status, ErrorBody{Error: e.Code, Detail: e.Message, Field: e.Field, Allowed: e.Allowed})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// StateStore keeps adapter state across restarts. A Backend that also
// implements it has the tenants' options persisted.
type StateStore interface {
	LoadState(ctx context.Context, key string) ([]byte, error)
	SaveState(ctx context.Context, key string, data []byte) error
}

// storedOptions is a tenant's options as persisted.
type storedOptions struct {
	Model    string `json:"model,omitempty"`
	ClipSkip int    `json:"clip_skip"`
}

func optionsKey(tenant string) string { return "a1111.options." + tenant }

func (h *Handler) opts(tenant string) tenantOptions {
	h.mu.Lock()
	if o := h.options[tenant]; o != nil {
		h.mu.Unlock()
		return *o
	}
	h.mu.Unlock()
	o := tenantOptions{clipSkip: 1}
	if st, ok := h.b.(StateStore); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		data, err := st.LoadState(ctx, optionsKey(tenant))
		cancel()
		var so storedOptions
		if err == nil && data != nil && json.Unmarshal(data, &so) == nil {
			o = tenantOptions{model: so.Model, clipSkip: max(1, so.ClipSkip)}
		}
	}
	return o
}

// saveOpts records a tenant's options (in memory and, with a StateStore,
// persisted).
func (h *Handler) saveOpts(ctx context.Context, tenant string, o tenantOptions) *apierr.Error {
	if st, ok := h.b.(StateStore); ok {
		data, _ := json.Marshal(storedOptions{Model: o.model, ClipSkip: o.clipSkip})
		if err := st.SaveState(ctx, optionsKey(tenant), data); err != nil {
			return apierr.New(http.StatusServiceUnavailable, apierr.CodeUnavailable, "", "storing the options failed; retry")
		}
	}
	h.mu.Lock()
	h.options[tenant] = &o
	h.mu.Unlock()
	return nil
}

// ---- generation ----

// GenerationRequest is the body of txt2img and img2img: AUTOMATIC1111's
// StableDiffusionProcessing fields. Those Kiln implements are typed; the
// rest are accepted only at their defaults (see ignored).
type GenerationRequest struct {
	Prompt            string   `json:"prompt"`
	NegativePrompt    string   `json:"negative_prompt"`
	Seed              *int64   `json:"seed"`
	SamplerName       string   `json:"sampler_name"`
	SamplerIndex      string   `json:"sampler_index"`
	Scheduler         string   `json:"scheduler"`
	BatchSize         *int     `json:"batch_size"`
	NIter             *int     `json:"n_iter"`
	Steps             *int     `json:"steps"`
	CFGScale          *float64 `json:"cfg_scale"`
	Width             *int     `json:"width"`
	Height            *int     `json:"height"`
	DenoisingStrength *float64 `json:"denoising_strength"`
	// edit holds the variation-seed and inpainting fields (edit.go).
	edit
	// hires holds txt2img's hires-fix fields (hires.go).
	hires
	OverrideSettings map[string]any `json:"override_settings"`
	InitImages       []string       `json:"init_images"`
	SendImages       *bool          `json:"send_images"`
	ForceTaskID      string         `json:"force_task_id"`
	Styles           []string       `json:"styles"`
	Comments         map[string]any `json:"comments"`
}

// ignored lists A1111 request fields Kiln accepts only at these values
// (JSON, compacted; null is always accepted): features it does not have.
var ignored = map[string][]string{
	"seed_resize_from_h": {"-1", "0"}, "seed_resize_from_w": {"-1", "0"},
	"restore_faces": {"false"}, "tiling": {"false"}, "eta": {"0", "0.0", "1", "1.0"}, "s_min_uncond": {"0", "0.0"},
	"s_churn": {"0", "0.0"}, "s_tmax": {"0", "0.0"}, "s_tmin": {"0", "0.0"}, "s_noise": {"1", "1.0"},
	"override_settings_restore_afterwards": {"true", "false"}, "refiner_checkpoint": {`""`}, "refiner_switch_at": {"0", "1", "0.0", "1.0"},
	"disable_extra_networks": {"false", "true"}, "firstpass_image": {`""`}, "enable_hr": {"false"}, "firstphase_width": {"0"},
	"firstphase_height": {"0"}, "hr_scale": {"2", "2.0"}, "hr_upscaler": {`""`, `"Latent"`}, "hr_second_pass_steps": {"0"},
	"hr_resize_x": {"0"}, "hr_resize_y": {"0"}, "hr_checkpoint_name": {`""`}, "hr_sampler_name": {`""`}, "hr_scheduler": {`""`},
	"hr_prompt": {`""`}, "hr_negative_prompt": {`""`}, "script_name": {`""`}, "script_args": {"[]"}, "alwayson_scripts": {"{}"},
	"do_not_save_samples": {"true", "false"}, "do_not_save_grid": {"true", "false"}, "save_images": {"true", "false"},
	"infotext": {`""`}, "resize_mode": {"0"}, "image_cfg_scale": {"0", "1.5", "0.0"}, "mask": {`""`}, "mask_blur": {"4"},
	"mask_blur_x": {"4"}, "mask_blur_y": {"4"}, "mask_round": {"true", "false"}, "inpainting_fill": {"0", "1"},
	"inpaint_full_res": {"true", "false"}, "inpaint_full_res_padding": {"0", "32"}, "inpainting_mask_invert": {"0"},
	"initial_noise_multiplier": {"1", "1.0"}, "latent_mask": {`""`}, "include_init_images": {"true", "false"},
	"outpath_samples": nil, "outpath_grids": nil, "user": nil,
}

// why says what a non-default ignored field would need.
var why = map[string]string{
	"enable_hr": "hires fix in img2img", "restore_faces": "face restoration", "tiling": "tiling", "mask": "inpainting (not yet available)",
	"script_name": "scripts", "alwayson_scripts": "scripts", "script_args": "scripts", "refiner_checkpoint": "refiners",
	"mask_blur": "mask blur without a mask (img2img only)", "inpainting_fill": "masked content without a mask (img2img only)",
}

// decodeRequest reads a generation request: typed fields into r, the
// others checked against ignored.
func (h *Handler) decodeRequest(req *http.Request, img2img bool) (*GenerationRequest, map[string]json.RawMessage, *apierr.Error) {
	var raw map[string]json.RawMessage
	if err := apierr.DecodeStrict(req.Body, h.maxBody, &raw); err != nil {
		return nil, nil, err
	}
	known := map[string]bool{}
	for _, k := range typedFields(img2img) {
		known[k] = true
	}
	typed := map[string]json.RawMessage{}
	for k, v := range raw {
		if known[k] {
			typed[k] = v
			continue
		}
		allowed, ok := ignored[k]
		if !ok {
			return nil, nil, &apierr.Error{Status: 400, Code: apierr.CodeUnknownField, Field: k, Message: fmt.Sprintf("unknown field %q", k)}
		}
		if allowed == nil {
			continue // accepted, without meaning here
		}
		var buf bytes.Buffer
		if json.Compact(&buf, v) != nil {
			return nil, nil, apierr.Invalid(k, "%s is not valid JSON", k)
		}
		val := buf.String()
		if val == "null" {
			continue
		}
		okVal := false
		for _, a := range allowed {
			if val == a {
				okVal = true
			}
		}
		if !okVal {
			feature := why[k]
			if feature == "" {
				feature = "this setting"
			}
			return nil, nil, apierr.Invalid(k, "%s=%s is not supported: Kiln has no %s; leave it at %s", k, val, feature, allowed[0])
		}
	}
	data, _ := json.Marshal(typed)
	var r GenerationRequest
	if err := json.Unmarshal(data, &r); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, nil, apierr.Invalid(te.Field, "%s must be a JSON %s", te.Field, te.Type.Kind())
		}
		return nil, nil, apierr.Invalid("", "invalid request: %v", err)
	}
	return &r, raw, nil
}

func typedFields(img2img bool) []string {
	f := []string{"prompt", "negative_prompt", "seed", "sampler_name", "sampler_index", "scheduler", "batch_size", "n_iter",
		"steps", "cfg_scale", "width", "height", "override_settings", "send_images", "force_task_id", "styles", "comments",
		"subseed", "subseed_strength"}
	if img2img {
		f = append(f, "init_images", "denoising_strength", "mask", "mask_blur", "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding")
	} else {
		f = append(f, "denoising_strength") // hires fix strength; only meaningful with enable_hr
		f = append(f, hiresFields...)
	}
	return f
}

// GenerationResponse is A1111's TextToImageResponse / ImageToImageResponse.
type GenerationResponse struct {
	// Images are base64 PNGs.
	Images []string `json:"images"`
	// Parameters echo the request with the values used.
	Parameters map[string]any `json:"parameters"`
	// Info is a JSON object as a string (see Info).
	Info string `json:"info"`
}

// Info is the generation info A1111 returns as a JSON string.
type Info struct {
	Prompt                string         `json:"prompt"`
	AllPrompts            []string       `json:"all_prompts"`
	NegativePrompt        string         `json:"negative_prompt"`
	AllNegativePrompts    []string       `json:"all_negative_prompts"`
	Seed                  uint64         `json:"seed"`
	AllSeeds              []uint64       `json:"all_seeds"`
	Subseed               int64          `json:"subseed"`
	AllSubseeds           []int64        `json:"all_subseeds"`
	SubseedStrength       float64        `json:"subseed_strength"`
	Width                 int            `json:"width"`
	Height                int            `json:"height"`
	SamplerName           string         `json:"sampler_name"`
	CFGScale              float64        `json:"cfg_scale"`
	Steps                 int            `json:"steps"`
	BatchSize             int            `json:"batch_size"`
	RestoreFaces          bool           `json:"restore_faces"`
	FaceRestorationModel  *string        `json:"face_restoration_model"`
	SDModelName           string         `json:"sd_model_name"`
	SDModelHash           string         `json:"sd_model_hash"`
	SDVAEName             *string        `json:"sd_vae_name"`
	SDVAEHash             *string        `json:"sd_vae_hash"`
	SeedResizeFromW       int            `json:"seed_resize_from_w"`
	SeedResizeFromH       int            `json:"seed_resize_from_h"`
	DenoisingStrength     *float64       `json:"denoising_strength"`
	ExtraGenerationParams map[string]any `json:"extra_generation_params"`
	IndexOfFirstImage     int            `json:"index_of_first_image"`
	Infotexts             []string       `json:"infotexts"`
	Styles                []string       `json:"styles"`
	JobTimestamp          string         `json:"job_timestamp"`
	ClipSkip              int            `json:"clip_skip"`
	IsUsingInpaintingCond bool           `json:"is_using_inpainting_conditioning"`
	Version               string         `json:"version"`
}

func (h *Handler) txt2img(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	h.generate(w, r, p, false)
}

func (h *Handler) img2img(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	h.generate(w, r, p, true)
}

// jobRequest converts an A1111 request to a native one.
func (h *Handler) jobRequest(g *GenerationRequest, p auth.Principal, img2img bool) (*validate.JobRequest, *apierr.Error) {
	o := h.opts(p.Tenant)
	if g.OverrideSettings != nil {
		if err := h.applyOptions(&o, g.OverrideSettings, "override_settings."); err != nil {
			return nil, err
		}
	}
	if len(g.Styles) > 0 {
		return nil, apierr.Invalid("styles", "styles are not supported (Kiln has no prompt styles); send the prompt text")
	}
	jr := &validate.JobRequest{Prompt: g.Prompt, NegativePrompt: g.NegativePrompt, Model: o.model, Steps: g.Steps,
		Guidance: g.CFGScale, Width: g.Width, Height: g.Height}
	samplerName := g.SamplerName
	if samplerName == "" {
		samplerName = g.SamplerIndex // the legacy field
	}
	s, err := sample.FromA1111(samplerName, g.Scheduler)
	if err != nil {
		field := "sampler_name"
		if strings.Contains(err.Error(), "schedul") {
			field = "scheduler"
		}
		return nil, apierr.Invalid(field, "%v", err)
	}
	jr.Sampler = s
	if g.Seed != nil && *g.Seed != -1 {
		if *g.Seed < 0 {
			return nil, apierr.Invalid("seed", "seed must be -1 (random) or from 0 to %d", uint64(validate.MaxSeed))
		}
		seed := uint64(*g.Seed)
		jr.Seed = &seed
	}
	batch, iter := 1, 1
	if g.BatchSize != nil {
		batch = *g.BatchSize
	}
	if g.NIter != nil {
		iter = *g.NIter
	}
	if batch < 1 || iter < 1 || batch > 64 || iter > 64 {
		return nil, apierr.Invalid("batch_size", "batch_size and n_iter must be from 1 to 64")
	}
	// A1111 seeds image i of all n_iter × batch_size images with seed + i,
	// as a native job of that many images does.
	n := batch * iter
	jr.N = &n
	if o.clipSkip > 1 {
		cs := o.clipSkip
		jr.ClipSkip = &cs
	}
	if img2img {
		switch len(g.InitImages) {
		case 0:
			return nil, apierr.Invalid("init_images", "img2img needs one image in init_images")
		case 1:
		default:
			return nil, apierr.Invalid("init_images", "img2img takes one init image, got %d", len(g.InitImages))
		}
		jr.InitImage = g.InitImages[0]
		strength := 0.75
		if g.DenoisingStrength != nil {
			strength = *g.DenoisingStrength
		}
		jr.Strength = &strength
	}
	if aerr := g.edit.apply(jr, img2img); aerr != nil {
		return nil, aerr
	}
	if !img2img {
		if aerr := g.hires.apply(jr, g.DenoisingStrength); aerr != nil {
			return nil, aerr
		}
	}
	return jr, nil
}

func (h *Handler) generate(w http.ResponseWriter, r *http.Request, p auth.Principal, img2img bool) {
	g, raw, aerr := h.decodeRequest(r, img2img)
	if aerr != nil {
		WriteError(w, aerr)
		return
	}
	jr, aerr := h.jobRequest(g, p, img2img)
	if aerr != nil {
		WriteError(w, aerr)
		return
	}
	job, aerr := h.b.Submit(r.Context(), p, jr, "a1111")
	if aerr != nil {
		if aerr.Field == "init_image" {
			aerr.Field = "init_images"
		}
		WriteError(w, aerr)
		return
	}
	act := &activeJob{id: job.ID, timestamp: job.CreatedAt.Format("20060102150405")}
	h.mu.Lock()
	h.active[p.Tenant] = append(h.active[p.Tenant], act)
	h.mu.Unlock()
	defer h.forget(p.Tenant, act)

	done, aerr := jobwatch.AwaitFinal(r.Context(), h.b, w.Header(), p.Tenant, job.ID, h.timeout)
	if aerr != nil {
		WriteError(w, aerr)
		return
	}
	switch done.Status {
	case jobs.StatusSucceeded, jobs.StatusCanceled:
		// An interrupted or skipped generation answers with what it has
		// (nothing), as A1111 does, rather than an error.
	default:
		msg := "the job failed"
		if done.Error != nil {
			msg += ": " + done.Error.Message
		}
		WriteError(w, apierr.New(http.StatusInternalServerError, "job_failed", "", "%s", msg))
		return
	}
	resp, aerr := h.response(r.Context(), p, done, g, raw, img2img)
	if aerr != nil {
		WriteError(w, aerr)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *Handler) forget(tenant string, act *activeJob) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.active[tenant]
	for i, a := range list {
		if a == act {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(h.active, tenant)
	} else {
		h.active[tenant] = list
	}
}

// response builds A1111's answer from the finished job; the infotexts are
// the stored images' own "parameters" chunks.
func (h *Handler) response(ctx context.Context, p auth.Principal, j *jobs.Job, g *GenerationRequest, raw map[string]json.RawMessage,
	img2img bool) (*GenerationResponse, *apierr.Error) {
	jp := j.Params
	name, _ := sample.A1111(jp.Sampler)
	info := Info{Prompt: jp.Prompt, NegativePrompt: jp.NegativePrompt, Seed: jp.Seed, Subseed: -1, Width: jp.Width, Height: jp.Height,
		SamplerName: name.Sampler, CFGScale: jp.Guidance, Steps: jp.Steps, BatchSize: 1, SDModelName: jp.Model,
		SeedResizeFromW: -1, SeedResizeFromH: -1, ExtraGenerationParams: map[string]any{"Schedule type": name.ScheduleLabel()},
		Styles: []string{}, JobTimestamp: j.CreatedAt.Format("20060102150405"), ClipSkip: max(1, jp.ClipSkip),
		AllPrompts: []string{}, AllNegativePrompts: []string{}, AllSeeds: []uint64{}, AllSubseeds: []int64{}, Infotexts: []string{}}
	if g.BatchSize != nil {
		info.BatchSize = *g.BatchSize
	}
	if full := h.b.ModelHash(ctx, jp.Model); len(full) >= 10 {
		info.SDModelHash = full[:10]
	}
	if img2img {
		s := jp.Strength
		info.DenoisingStrength = &s
	}
	if h := jp.Hires; h != nil {
		d := h.Denoise
		info.DenoisingStrength = &d
	}
	resp := &GenerationResponse{Images: []string{}}
	send := g.SendImages == nil || *g.SendImages
	for _, im := range j.Images {
		data, err := h.b.Image(ctx, p.Tenant, im.ID)
		if err != nil {
			return nil, apierr.New(http.StatusInternalServerError, apierr.CodeInternal, "", "reading image %s: %v", im.ID, err)
		}
		text, _ := imageio.ReadParameters(bytes.NewReader(data))
		info.Infotexts = append(info.Infotexts, text)
		info.AllPrompts = append(info.AllPrompts, jp.Prompt)
		info.AllNegativePrompts = append(info.AllNegativePrompts, jp.NegativePrompt)
		info.AllSeeds = append(info.AllSeeds, im.Seed)
		info.AllSubseeds = append(info.AllSubseeds, -1)
		if gen, err := imageio.ParseGeneration(text); err == nil && info.Version == "" {
			info.Version = gen.Version
		}
		if send {
			resp.Images = append(resp.Images, base64.StdEncoding.EncodeToString(data))
		}
	}
	infoJSON, _ := json.Marshal(info)
	resp.Info = string(infoJSON)
	// parameters: the request as sent, with the values Kiln used.
	params := map[string]any{}
	for k, v := range raw {
		if k == "init_images" {
			continue // A1111 echoes them; sending megabytes back helps nobody
		}
		params[k] = v
	}
	seed := int64(jp.Seed)
	params["prompt"], params["negative_prompt"], params["seed"] = jp.Prompt, jp.NegativePrompt, seed
	params["sampler_name"], params["scheduler"] = name.Sampler, name.Scheduler
	params["steps"], params["cfg_scale"], params["width"], params["height"] = jp.Steps, jp.Guidance, jp.Width, jp.Height
	params["batch_size"], params["n_iter"] = info.BatchSize, max(1, jp.N/max(1, info.BatchSize))
	if img2img {
		params["denoising_strength"] = jp.Strength
	}
	if h := jp.Hires; h != nil {
		params["denoising_strength"], params["hr_second_pass_steps"] = h.Denoise, h.Steps
	}
	resp.Parameters = params
	return resp, nil
}

// ---- options ----

// Options are the A1111 options Kiln keeps per tenant.
type Options struct {
	// SDModelCheckpoint is the checkpoint title ("name [hash]") or name.
	SDModelCheckpoint string `json:"sd_model_checkpoint"`
	// SDCheckpointHash is the checkpoint's full SHA-256 (read only).
	SDCheckpointHash string `json:"sd_checkpoint_hash,omitempty"`
	// ClipStopAtLastLayers is clip skip (1 = the last layer).
	ClipStopAtLastLayers int `json:"CLIP_stop_at_last_layers"`
	// SamplesFormat is always "png".
	SamplesFormat string `json:"samples_format"`
	// RandnSource is the noise generator: "CPU" (the server's).
	RandnSource string `json:"randn_source"`
	// SDVAE is always "Automatic" (the checkpoint's own VAE).
	SDVAE string `json:"sd_vae"`
	// EtaNoiseSeedDelta is always 0.
	EtaNoiseSeedDelta int `json:"eta_noise_seed_delta"`
}

func (h *Handler) getOptions(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	o := h.opts(p.Tenant)
	list, def := h.b.Models()
	model := o.model
	if model == "" {
		model = def
	}
	out := Options{ClipStopAtLastLayers: max(1, o.clipSkip), SamplesFormat: "png", RandnSource: "CPU", SDVAE: "Automatic"}
	for _, m := range list {
		if m.Name == model {
			out.SDCheckpointHash = h.b.ModelHash(r.Context(), m.Name)
			out.SDModelCheckpoint = title(m.Name, out.SDCheckpointHash)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) setOptions(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	var req map[string]any
	if err := apierr.DecodeStrict(r.Body, h.maxBody, &req); err != nil {
		WriteError(w, err)
		return
	}
	o := h.opts(p.Tenant)
	if err := h.applyOptions(&o, req, ""); err != nil {
		WriteError(w, err)
		return
	}
	if err := h.saveOpts(r.Context(), p.Tenant, o); err != nil {
		WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// applyOptions checks and applies A1111 options; prefix names the fields
// in errors.
func (h *Handler) applyOptions(o *tenantOptions, req map[string]any, prefix string) *apierr.Error {
	for k, v := range req {
		field := prefix + k
		switch k {
		case "sd_model_checkpoint":
			s, ok := v.(string)
			if !ok {
				return apierr.Invalid(field, "%s must be a string", field)
			}
			name, err := h.findModel(s)
			if err != nil {
				return apierr.New(400, apierr.CodeNoModel, field, "%v", err)
			}
			o.model = name
		case "CLIP_stop_at_last_layers":
			f, ok := v.(float64)
			if !ok || f != math.Trunc(f) || f < 1 || f > validate.MaxClipSkip {
				return apierr.Invalid(field, "%s must be an integer from 1 to %d", field, validate.MaxClipSkip)
			}
			o.clipSkip = int(f)
		case "samples_format":
			if v != "png" {
				return apierr.Invalid(field, "%s: Kiln writes png only", field)
			}
		case "randn_source":
			if v != "CPU" {
				return apierr.Invalid(field, "%s: the server draws noise with torch's CPU generator (CPU) only", field)
			}
		case "sd_vae":
			if v != "Automatic" && v != "None" {
				return apierr.Invalid(field, "%s: only the checkpoint's own VAE (Automatic) is available", field)
			}
		case "eta_noise_seed_delta":
			if v != float64(0) {
				return apierr.Invalid(field, "%s must be 0", field)
			}
		case "sd_checkpoint_hash":
			// read only; A1111 clients send back what they read
		default:
			return &apierr.Error{Status: 400, Code: apierr.CodeUnknownField, Field: field,
				Message: fmt.Sprintf("option %q is not supported; Kiln keeps sd_model_checkpoint, CLIP_stop_at_last_layers, samples_format, randn_source, sd_vae and eta_noise_seed_delta", k)}
		}
	}
	return nil
}

// title is A1111's checkpoint title.
func title(name, fullHash string) string {
	if len(fullHash) >= 10 {
		return name + " [" + fullHash[:10] + "]"
	}
	return name
}

// findModel resolves a checkpoint title, name or short hash.
func (h *Handler) findModel(s string) (string, error) {
	s = strings.TrimSpace(s)
	base, hash, _ := strings.Cut(s, " [")
	hash = strings.TrimSuffix(hash, "]")
	list, _ := h.b.Models()
	var names []string
	for _, m := range list {
		names = append(names, m.Name)
		if m.Name == s || m.Name == base || strings.TrimSuffix(m.Name, ".safetensors") == strings.TrimSuffix(base, ".safetensors") {
			return m.Name, nil
		}
	}
	if hash == "" && len(s) == 10 {
		hash = s
	}
	if hash != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, m := range list {
			if full := h.b.ModelHash(ctx, m.Name); strings.HasPrefix(full, hash) {
				return m.Name, nil
			}
		}
	}
	return "", fmt.Errorf("model %q not found; GET %s/sd-models lists them (%s)", s, Prefix, strings.Join(names, ", "))
}

// ---- catalogs ----

// SDModel is A1111's SDModelItem.
type SDModel struct {
	Title     string  `json:"title"`
	ModelName string  `json:"model_name"`
	Hash      *string `json:"hash"`
	SHA256    *string `json:"sha256"`
	Filename  string  `json:"filename"`
	Config    *string `json:"config"`
}

func (h *Handler) sdModels(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	list, _ := h.b.Models()
	out := make([]SDModel, 0, len(list))
	for _, m := range list {
		full := h.b.ModelHash(r.Context(), m.Name)
		item := SDModel{Title: title(m.Name, full), ModelName: m.Name, Filename: m.Name}
		if full != "" {
			short := full[:10]
			item.Hash, item.SHA256 = &short, &full
		}
		out = append(out, item)
	}
	writeJSON(w, http.StatusOK, out)
}

// SamplerItem is A1111's SamplerItem; Aliases are Kiln's sampler names.
type SamplerItem struct {
	Name    string         `json:"name"`
	Aliases []string       `json:"aliases"`
	Options map[string]any `json:"options"`
}

func (h *Handler) samplers(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	byName := map[string]*SamplerItem{}
	var out []*SamplerItem
	for _, id := range sample.Names() {
		n, _ := sample.A1111(id)
		it := byName[n.Sampler]
		if it == nil {
			it = &SamplerItem{Name: n.Sampler, Aliases: []string{}, Options: map[string]any{}}
			byName[n.Sampler] = it
			out = append(out, it)
		}
		it.Aliases = append(it.Aliases, id)
		if n.Scheduler != "automatic" {
			it.Options["scheduler_"+n.Scheduler] = true
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// SchedulerItem is A1111's SchedulerItem.
type SchedulerItem struct {
	Name           string   `json:"name"`
	Label          string   `json:"label"`
	Aliases        []string `json:"aliases"`
	DefaultRho     float64  `json:"default_rho"`
	NeedInnerModel bool     `json:"need_inner_model"`
}

func (h *Handler) schedulers(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	var out []SchedulerItem
	for _, s := range sample.Schedulers() {
		it := SchedulerItem{Name: s[0], Label: s[1], Aliases: []string{}, DefaultRho: -1}
		if s[0] == "karras" {
			it.DefaultRho = 7
		}
		out = append(out, it)
	}
	writeJSON(w, http.StatusOK, out)
}

// LoraItem is an entry of A1111's /loras list.
type LoraItem struct {
	Name     string         `json:"name"`
	Alias    string         `json:"alias"`
	Path     string         `json:"path"`
	Metadata map[string]any `json:"metadata"`
}

// EmbeddingItem is A1111's EmbeddingItem.
type EmbeddingItem struct {
	Step             *int    `json:"step"`
	SDCheckpoint     *string `json:"sd_checkpoint"`
	SDCheckpointName *string `json:"sd_checkpoint_name"`
	Shape            int     `json:"shape"`
	Vectors          int     `json:"vectors"`
}

// EmbeddingsResponse is A1111's EmbeddingsResponse.
type EmbeddingsResponse struct {
	Loaded  map[string]EmbeddingItem `json:"loaded"`
	Skipped map[string]EmbeddingItem `json:"skipped"`
}

// UpscalerItem is A1111's UpscalerItem.
type UpscalerItem struct {
	Name      string   `json:"name"`
	ModelName *string  `json:"model_name"`
	ModelPath *string  `json:"model_path"`
	ModelURL  *string  `json:"model_url"`
	Scale     *float64 `json:"scale"`
}

// upscalers lists A1111's "None" only: Kiln has no upscaling models.
func (h *Handler) upscalers(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	writeJSON(w, http.StatusOK, []UpscalerItem{{Name: "None"}})
}

// MemoryResponse is A1111's MemoryResponse: system RAM and GPU memory in
// bytes ("cuda" holds "error" without a GPU, as A1111's does).
type MemoryResponse struct {
	RAM  map[string]any `json:"ram"`
	CUDA map[string]any `json:"cuda"`
}

func (h *Handler) memory(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	total, avail := gpu.MemInfo()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	out := MemoryResponse{RAM: map[string]any{"free": avail, "used": total - avail, "total": total, "process": ms.Sys}}
	gpus := h.b.GPUs()
	if len(gpus) == 0 {
		out.CUDA = map[string]any{"error": "no GPU reported by any worker"}
	} else {
		var used, tot int64
		for _, g := range gpus {
			used += g.MemoryUsed
			tot += g.MemoryTotal
		}
		out.CUDA = map[string]any{"system": map[string]any{"free": tot - used, "used": used, "total": tot}, "devices": len(gpus)}
	}
	writeJSON(w, http.StatusOK, out)
}

// ---- progress and control ----

// ProgressState is the "state" object of A1111's progress.
type ProgressState struct {
	Skipped            bool   `json:"skipped"`
	Interrupted        bool   `json:"interrupted"`
	StoppingGeneration bool   `json:"stopping_generation"`
	Job                string `json:"job"`
	JobCount           int    `json:"job_count"`
	JobTimestamp       string `json:"job_timestamp"`
	JobNo              int    `json:"job_no"`
	SamplingStep       int    `json:"sampling_step"`
	SamplingSteps      int    `json:"sampling_steps"`
}

// ProgressResponse is A1111's ProgressResponse; CurrentImage is a base64
// PNG of the latest preview.
type ProgressResponse struct {
	Progress     float64       `json:"progress"`
	EtaRelative  float64       `json:"eta_relative"`
	State        ProgressState `json:"state"`
	CurrentImage *string       `json:"current_image"`
	TextInfo     *string       `json:"textinfo"`
}

func (h *Handler) progress(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	skipImage := r.URL.Query().Get("skip_current_image") == "true"
	h.mu.Lock()
	list := h.active[p.Tenant]
	var cur activeJob
	if len(list) > 0 {
		cur = *list[0]
	}
	count := len(list)
	h.mu.Unlock()
	out := ProgressResponse{State: ProgressState{JobCount: count, Interrupted: cur.interrupted, Skipped: cur.skipped}}
	if count == 0 {
		writeJSON(w, http.StatusOK, out)
		return
	}
	out.State.Job, out.State.JobTimestamp = "task("+cur.id+")", cur.timestamp
	st, ok := h.b.Live(p.Tenant, cur.id)
	if ok && st.Steps > 0 {
		out.State.SamplingStep, out.State.SamplingSteps = st.Step, st.Steps
		out.Progress = math.Min(1, float64(st.Step)/float64(st.Steps))
		if st.Step > 0 && !st.Started.IsZero() {
			per := time.Since(st.Started).Seconds() / float64(st.Step)
			out.EtaRelative = per * float64(st.Steps-st.Step)
		}
		if !skipImage && len(st.Preview) > 0 {
			if s, err := jpegToPNGBase64(st.Preview); err == nil {
				out.CurrentImage = &s
			}
		}
		text := fmt.Sprintf("Sampling step %d/%d", st.Step, st.Steps)
		out.TextInfo = &text
	}
	writeJSON(w, http.StatusOK, out)
}

func jpegToPNGBase64(data []byte) (string, error) {
	img, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

// interrupt cancels all of the tenant's generations made through this API.
func (h *Handler) interrupt(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	h.mu.Lock()
	var ids []string
	for _, a := range h.active[p.Tenant] {
		a.interrupted = true
		ids = append(ids, a.id)
	}
	h.mu.Unlock()
	for _, id := range ids {
		h.b.Cancel(r.Context(), p.Tenant, id)
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// skip cancels the tenant's current generation; later ones go on.
func (h *Handler) skip(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	h.mu.Lock()
	var id string
	if list := h.active[p.Tenant]; len(list) > 0 {
		list[0].skipped = true
		id = list[0].id
	}
	h.mu.Unlock()
	if id != "" {
		h.b.Cancel(r.Context(), p.Tenant, id)
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// ---- png-info ----

// PNGInfoRequest is A1111's PNGInfoRequest: a base64 image (or data URL).
type PNGInfoRequest struct {
	Image string `json:"image"`
}

// PNGInfoResponse is A1111's PNGInfoResponse.
type PNGInfoResponse struct {
	// Info is the "parameters" text ("" when the image has none).
	Info string `json:"info"`
	// Items are the image's other text chunks.
	Items map[string]string `json:"items"`
	// Parameters are the parsed fields: "Prompt", "Negative prompt", each
	// "Key" of the fields line, and "Size-1"/"Size-2" for the size.
	Parameters map[string]string `json:"parameters"`
}

func (h *Handler) pngInfo(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	var req PNGInfoRequest
	if err := apierr.DecodeStrict(r.Body, h.maxBody, &req); err != nil {
		WriteError(w, err)
		return
	}
	data, err := decodeBase64Image(req.Image)
	if err != nil {
		WriteError(w, apierr.Invalid("image", "%v", err))
		return
	}
	out := PNGInfoResponse{Items: map[string]string{}, Parameters: map[string]string{}}
	if _, format, err := image.DecodeConfig(bytes.NewReader(data)); err != nil || format != "png" {
		// A1111 answers non-PNG images with empty info; so does Kiln.
		writeJSON(w, http.StatusOK, out)
		return
	}
	texts, err := imageio.ReadText(bytes.NewReader(data))
	if err != nil {
		WriteError(w, apierr.Invalid("image", "reading the PNG's text: %v", err))
		return
	}
	for _, t := range texts {
		if t.Key == imageio.ParametersKey {
			out.Info = t.Value
		} else {
			out.Items[t.Key] = t.Value
		}
	}
	if out.Info != "" {
		if ps, err := imageio.ParseParameters(out.Info); err == nil {
			out.Parameters["Prompt"] = ps.Prompt
			out.Parameters["Negative prompt"] = ps.NegativePrompt
			for _, f := range ps.Fields {
				out.Parameters[f.Key] = f.Value
				if f.Key == "Size" {
					if a, b, ok := strings.Cut(f.Value, "x"); ok {
						out.Parameters["Size-1"], out.Parameters["Size-2"] = a, b
					}
				}
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// decodeBase64Image decodes base64 (standard or raw) or a base64 data URL.
func decodeBase64Image(s string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(s, "data:"); ok {
		meta, payload, found := strings.Cut(rest, ",")
		if !found || !strings.HasSuffix(meta, ";base64") {
			return nil, errors.New("a data: URL must be base64 encoded")
		}
		s = payload
	}
	if s == "" {
		return nil, errors.New("image is required")
	}
	data, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if data, err = base64.RawStdEncoding.DecodeString(s); err != nil {
			return nil, errors.New("image is not valid base64")
		}
	}
	return data, nil
}
