// Package openai serves the OpenAI Images API shape over Kiln's job flow:
// POST /v1/images/generations with model, prompt, n, size, quality
// (mapped to a performance profile), response_format (b64_json or a signed
// url) and user, answering {created, data: [{b64_json|url,
// revised_prompt}]} once the job is done, with OpenAI-shaped errors, so
// that the official openai client libraries work against Kiln's base URL.
// POST /v1/images/edits (multipart: image, a mask whose transparent pixels
// are repainted, prompt) becomes an inpainting job, or img2img without a
// mask; POST /v1/images/variations becomes img2img of the image at
// VariationStrength.
package openai

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/gateway/jobwatch"
	"github.com/kiln-project/kiln/gateway/validate"
	"github.com/kiln-project/kiln/server/jobs"
)

// Backend is what the handler needs from the gateway.
type Backend interface {
	// Submit validates and enqueues a job.
	Submit(ctx context.Context, p auth.Principal, r *validate.JobRequest, source string) (*jobs.Job, *apierr.Error)
	// Wait returns the job once it is final.
	Wait(ctx context.Context, tenant, id string) (*jobs.Job, error)
	// Cancel stops a job nobody waits for any more.
	Cancel(ctx context.Context, tenant, id string)
	// Image returns a stored PNG.
	Image(ctx context.Context, tenant, id string) ([]byte, error)
	// ImageURL returns an absolute, signed URL of an image.
	ImageURL(r *http.Request, tenant, imageID string) string
	// HasProfile reports whether a performance profile exists.
	HasProfile(name string) bool
	// DecodeImage decodes an uploaded PNG or JPEG within the server's
	// image limits and decode budget; errors name field.
	DecodeImage(ctx context.Context, field string, data []byte) (image.Image, *apierr.Error)
}

// Handler serves POST /v1/images/generations, /v1/images/edits and
// /v1/images/variations.
type Handler struct {
	b       Backend
	maxBody int64
	timeout time.Duration
}

// New returns a handler; timeout bounds how long a request waits for its
// images.
func New(b Backend, maxBody int64, timeout time.Duration) *Handler {
	return &Handler{b: b, maxBody: maxBody, timeout: timeout}
}

// GenerationRequest is the body of POST /v1/images/generations. Besides
// OpenAI's fields it accepts Kiln's negative_prompt, seed, steps, guidance
// and sampler.
type GenerationRequest struct {
	Prompt            string   `json:"prompt"`
	Model             string   `json:"model,omitempty"`
	N                 *int     `json:"n,omitempty"`
	Size              string   `json:"size,omitempty"`
	ResponseFormat    string   `json:"response_format,omitempty"`
	Quality           string   `json:"quality,omitempty"`
	Style             string   `json:"style,omitempty"`
	User              string   `json:"user,omitempty"`
	OutputFormat      string   `json:"output_format,omitempty"`
	Background        string   `json:"background,omitempty"`
	Moderation        string   `json:"moderation,omitempty"`
	OutputCompression *int     `json:"output_compression,omitempty"`
	NegativePrompt    string   `json:"negative_prompt,omitempty"`
	Seed              *uint64  `json:"seed,omitempty"`
	Steps             *int     `json:"steps,omitempty"`
	Guidance          *float64 `json:"guidance,omitempty"`
	Sampler           string   `json:"sampler,omitempty"`
	AllowAdjust       bool     `json:"allow_adjust,omitempty"`
	// LoRAs is Kiln's extension: installed LoRAs for this request.
	LoRAs []validate.LoRARequest `json:"loras,omitempty"`
}

// ImageData is one entry of the response.
type ImageData struct {
	B64JSON       string `json:"b64_json,omitempty"`
	URL           string `json:"url,omitempty"`
	RevisedPrompt string `json:"revised_prompt"`
}

// Response is the body of a successful response.
type Response struct {
	Created int64       `json:"created"`
	Data    []ImageData `json:"data"`
}

// ErrorBody is OpenAI's error envelope.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is OpenAI's error object.
type ErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// openAIModels are the OpenAI model names that mean "the default model".
var openAIModels = map[string]bool{"dall-e-2": true, "dall-e-3": true, "gpt-image-1": true, "gpt-image-1-mini": true}

var sizeRE = regexp.MustCompile(`^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$`)

// JobIDHeader names the job behind a response (the gateway's access log
// reads it, clients may poll it).
const JobIDHeader = "Kiln-Job-Id"

// WriteError sends a native API error in OpenAI's shape.
func WriteError(w http.ResponseWriter, e *apierr.Error) {
	typ := "invalid_request_error"
	switch {
	case e.Status == http.StatusTooManyRequests:
		typ = "rate_limit_error"
	case e.Status >= 500:
		typ = "server_error"
	}
	param := e.Field
	switch param {
	case "width", "height":
		param = "size"
	case "profile":
		param = "quality"
	case "init_image":
		param = "image"
	}
	code := e.Code
	if e.Status == http.StatusUnauthorized {
		code = "invalid_api_key"
	}
	body := ErrorBody{Error: ErrorDetail{Message: e.Message, Type: typ, Code: &code}}
	if param != "" {
		body.Error.Param = &param
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int((e.RetryAfter+time.Second-1)/time.Second))))
	}
	if len(e.Allowed) > 0 {
		w.Header().Set("Allow", strings.Join(e.Allowed, ", "))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(body)
}

func (h *Handler) convert(g *GenerationRequest) (*validate.JobRequest, *apierr.Error) {
	r := &validate.JobRequest{Prompt: g.Prompt, NegativePrompt: g.NegativePrompt, Seed: g.Seed, Steps: g.Steps,
		Guidance: g.Guidance, Sampler: g.Sampler, N: g.N, AllowAdjust: g.AllowAdjust, LoRAs: g.LoRAs}
	if !openAIModels[g.Model] {
		r.Model = g.Model
	}
	if g.N != nil && (*g.N < 1 || *g.N > 10) {
		return nil, apierr.Invalid("n", "n must be from 1 to 10")
	}
	switch g.Size {
	case "", "auto":
	default:
		m := sizeRE.FindStringSubmatch(g.Size)
		if m == nil {
			return nil, apierr.Invalid("size", "size must be WIDTHxHEIGHT (for example 512x512) or auto, got %q", g.Size)
		}
		w, _ := strconv.Atoi(m[1])
		hh, _ := strconv.Atoi(m[2])
		r.Width, r.Height = &w, &hh
		r.FitNative = true // OpenAI's size menu means SDXL's native resolutions on SDXL models
	}
	switch g.Quality {
	case "", "auto", "standard", "medium":
	case "low":
		r.Profile = "speed_first"
	case "high", "hd":
		r.Profile = "quality_first"
	default:
		return nil, apierr.Invalid("quality", "quality must be low, medium, high, standard, hd or auto")
	}
	if r.Profile != "" && !h.b.HasProfile(r.Profile) {
		r.Profile = ""
	}
	switch g.ResponseFormat {
	case "", "url", "b64_json":
	default:
		return nil, apierr.Invalid("response_format", "response_format must be url or b64_json")
	}
	switch g.OutputFormat {
	case "", "png":
	default:
		return nil, apierr.Invalid("output_format", "only png output is supported")
	}
	switch g.Background {
	case "", "auto", "opaque":
	default:
		return nil, apierr.Invalid("background", "only opaque backgrounds are supported")
	}
	switch g.Style {
	case "", "vivid", "natural":
	default:
		return nil, apierr.Invalid("style", "style must be vivid or natural")
	}
	switch g.Moderation {
	case "", "auto", "low":
	default:
		return nil, apierr.Invalid("moderation", "moderation must be auto or low")
	}
	if g.OutputCompression != nil && (*g.OutputCompression < 0 || *g.OutputCompression > 100) {
		return nil, apierr.Invalid("output_compression", "output_compression must be from 0 to 100")
	}
	if len(g.User) > 256 {
		return nil, apierr.Invalid("user", "user must be at most 256 characters")
	}
	return r, nil
}

// Generations handles POST /v1/images/generations for an authenticated
// tenant.
func (h *Handler) Generations(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	var g GenerationRequest
	if err := apierr.DecodeStrict(r.Body, h.maxBody, &g); err != nil {
		WriteError(w, err)
		return
	}
	jr, aerr := h.convert(&g)
	if aerr != nil {
		WriteError(w, aerr)
		return
	}
	h.finish(w, r, p, jr, g.ResponseFormat)
}

// finish submits a job, waits for it and answers with its images in the
// response format asked for.
func (h *Handler) finish(w http.ResponseWriter, r *http.Request, p auth.Principal, jr *validate.JobRequest, format string) {
	job, aerr := h.b.Submit(r.Context(), p, jr, "openai")
	if aerr != nil {
		WriteError(w, aerr)
		return
	}
	w.Header().Set(JobIDHeader, job.ID)
	if h := jobs.AdjustedHeader(job.Adjustments); h != "" {
		w.Header().Set(jobs.AdjustedHeaderName, h)
	}
	done, aerr := jobwatch.AwaitFinal(r.Context(), h.b, w.Header(), p.Tenant, job.ID, h.timeout)
	if aerr != nil {
		WriteError(w, aerr)
		return
	}
	switch done.Status {
	case jobs.StatusSucceeded:
	case jobs.StatusCanceled:
		WriteError(w, apierr.New(http.StatusInternalServerError, "canceled", "", "the job was canceled"))
		return
	default:
		msg := "the job failed"
		if done.Error != nil {
			msg += ": " + done.Error.Message
		}
		WriteError(w, apierr.New(http.StatusInternalServerError, "job_failed", "", "%s", msg))
		return
	}
	resp := Response{Created: done.CreatedAt.Unix(), Data: make([]ImageData, 0, len(done.Images))}
	for _, im := range done.Images {
		d := ImageData{RevisedPrompt: done.Params.Prompt}
		if format == "b64_json" {
			png, err := h.b.Image(r.Context(), p.Tenant, im.ID)
			if err != nil {
				WriteError(w, apierr.New(http.StatusInternalServerError, apierr.CodeInternal, "", "reading image %s: %v", im.ID, err))
				return
			}
			d.B64JSON = base64.StdEncoding.EncodeToString(png)
		} else {
			d.URL = h.b.ImageURL(r, p.Tenant, im.ID)
		}
		resp.Data = append(resp.Data, d)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}
