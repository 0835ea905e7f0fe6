// Package jobs is the durable job flow shared by gateways and workers: the
// job record (a JetStream KV bucket), the work queue (a JetStream
// work-queue stream with one durable consumer per priority), images and
// uploads (a JetStream object store), and the core-NATS subjects of live
// events, cancellations and worker heartbeats.
package jobs

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
)

// Job states. Queued and Running are live; the others are final.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusCanceled  = "canceled"
)

// Final reports whether a status is terminal.
func Final(status string) bool {
	return status == StatusSucceeded || status == StatusFailed || status == StatusCanceled
}

// ValidStatus reports whether s names a job state.
func ValidStatus(s string) bool {
	switch s {
	case StatusQueued, StatusRunning, StatusSucceeded, StatusFailed, StatusCanceled:
		return true
	}
	return false
}

// Priorities, highest first. Each tenant has a queue lane per priority;
// within a tenant, workers take high-priority jobs before older normal
// ones (with aging, see FairQueue).
const (
	PriorityHigh   = "high"
	PriorityNormal = "normal"
	PriorityLow    = "low"
)

// Priorities lists the priorities in the order workers serve them.
func Priorities() []string { return []string{PriorityHigh, PriorityNormal, PriorityLow} }

// ValidPriority reports whether p is a priority.
func ValidPriority(p string) bool {
	return p == PriorityHigh || p == PriorityNormal || p == PriorityLow
}

// Params are a job's validated, normalised generation parameters.
type Params struct {
	Model          string `json:"model"`
	Profile        string `json:"profile"`
	Prompt         string `json:"prompt"`
	NegativePrompt string `json:"negative_prompt,omitempty"`
	// Prompt2 and NegativePrompt2 are SDXL's second-encoder prompts ("":
	// the same as Prompt and NegativePrompt).
	Prompt2         string  `json:"prompt_2,omitempty"`
	NegativePrompt2 string  `json:"negative_prompt_2,omitempty"`
	Width           int     `json:"width"`
	Height          int     `json:"height"`
	Steps           int     `json:"steps"`
	Guidance        float64 `json:"guidance"`
	Sampler         string  `json:"sampler"`
	Seed            uint64  `json:"seed"`
	N               int     `json:"n"`
	ClipSkip        int     `json:"clip_skip,omitempty"`
	// InitImage names the uploaded init image (img2img); Strength applies.
	InitImage string  `json:"init_image,omitempty"`
	Strength  float64 `json:"strength,omitempty"`
	Priority  string  `json:"priority"`
	// SharedNoise draws the whole job's initial noise from one generator
	// seeded with Seed (as ComfyUI and diffusers do) instead of one
	// generator per image seeded Seed+i (as AUTOMATIC1111 does).
	SharedNoise bool `json:"shared_noise,omitempty"`
	// Micro is SDXL's micro-conditioning (nil: the model's defaults).
	Micro *Micro `json:"micro_conditioning,omitempty"`
	// Nodes is the job's Wasm node chain, {"pre": [...], "post": [...]},
	// kept as the client sent it; app/wasmadapter decodes and runs it.
	Nodes json.RawMessage `json:"nodes,omitempty"`
	// Subseed and SubseedStrength are AUTOMATIC1111's variation seeds
	// (strength 0: off; with a strength every image keeps Seed and image
	// i uses Subseed+i).
	Subseed         uint64  `json:"subseed,omitempty"`
	SubseedStrength float64 `json:"subseed_strength,omitempty"`
	// Mask names the uploaded inpainting mask (white = repaint); MaskBlur
	// and InpaintFill apply to it and to Outpaint's generated mask.
	Mask        string    `json:"mask,omitempty"`
	MaskBlur    int       `json:"mask_blur,omitempty"`
	InpaintFill string    `json:"inpaint_fill,omitempty"`
	Outpaint    *Outpaint `json:"outpaint,omitempty"`
	// InpaintFullRes inpaints only the region around the mask (grown by
	// InpaintFullResPadding pixels) at the job's width×height.
	InpaintFullRes        bool `json:"inpaint_full_res,omitempty"`
	InpaintFullResPadding int  `json:"inpaint_full_res_padding,omitempty"`
	// Hires is AUTOMATIC1111's hires fix: Width×Height is the first pass,
	// the images come out at the hires size (nil: off).
	Hires *Hires `json:"hires,omitempty"`
	// LoRAs are the job's LoRAs (the request's loras field and the
	// prompt's <lora:…> tags), resolved to installed files.
	LoRAs []LoRA `json:"loras,omitempty"`
	// Embeddings are the installed textual-inversion embeddings the
	// prompts name.
	Embeddings []Embedding `json:"embeddings,omitempty"`
}

// Hires is a job's resolved hires fix (see pipeline.Hires): Scale or
// Width×Height (the other zero), the upscaler ("latent" or "lanczos"), the
// second pass's steps (0: the job's) and denoising strength.
type Hires struct {
	Scale    float64 `json:"scale,omitempty"`
	Width    int     `json:"width,omitempty"`
	Height   int     `json:"height,omitempty"`
	Upscaler string  `json:"upscaler"`
	Steps    int     `json:"steps,omitempty"`
	Denoise  float64 `json:"denoise"`
}

// Size is the hires size for a first pass of w×ht pixels: Scale times it,
// or Width×Height with a zero side taken from the first pass's aspect
// ratio, sides rounded down to multiples of 8 (as the pipeline does for
// an 8× latent codec).
func (h Hires) Size(w, ht int) (int, int) {
	switch {
	case h.Scale > 0:
		return int(float64(w)*h.Scale) / 8 * 8, int(float64(ht)*h.Scale) / 8 * 8
	case ht <= 0 || w <= 0:
		return h.Width, h.Height
	case h.Width == 0:
		return h.Height * w / ht / 8 * 8, h.Height
	case h.Height == 0:
		return h.Width, h.Width * ht / w / 8 * 8
	}
	return h.Width, h.Height
}

// Outpaint extends an img2img job's canvas by pixels on each side.
type Outpaint struct {
	Left   int `json:"left,omitempty"`
	Right  int `json:"right,omitempty"`
	Top    int `json:"top,omitempty"`
	Bottom int `json:"bottom,omitempty"`
}

// LoRA is one LoRA a job uses, with its weights on the denoiser and the
// text encoder and its file's A1111 hash (hex SHA-256).
type LoRA struct {
	Name       string  `json:"name"`
	Weight     float64 `json:"weight"`
	TextWeight float64 `json:"text_weight"`
	Hash       string  `json:"hash"`
	// Tenant is the tenant whose upload this is (PUT /v1/loras/{name});
	// "" for an installed LoRA.
	Tenant string `json:"tenant,omitempty"`
}

// Embedding is a textual-inversion embedding a job's prompts name.
type Embedding struct {
	Name string `json:"name"`
	Hash string `json:"hash"`
}

// Micro is SDXL's micro-conditioning of a job: the original image size,
// the crop's top-left corner and the target size it tells the model about
// (pixels; a zero size means the image's size), the same for the
// unconditional (negative) half, and the refiner's aesthetic scores (0:
// the model's defaults, 6 and 2.5).
type Micro struct {
	OriginalWidth          int     `json:"original_width,omitempty"`
	OriginalHeight         int     `json:"original_height,omitempty"`
	CropTop                int     `json:"crop_top,omitempty"`
	CropLeft               int     `json:"crop_left,omitempty"`
	TargetWidth            int     `json:"target_width,omitempty"`
	TargetHeight           int     `json:"target_height,omitempty"`
	NegativeOriginalWidth  int     `json:"negative_original_width,omitempty"`
	NegativeOriginalHeight int     `json:"negative_original_height,omitempty"`
	NegativeCropTop        int     `json:"negative_crop_top,omitempty"`
	NegativeCropLeft       int     `json:"negative_crop_left,omitempty"`
	NegativeTargetWidth    int     `json:"negative_target_width,omitempty"`
	NegativeTargetHeight   int     `json:"negative_target_height,omitempty"`
	AestheticScore         float64 `json:"aesthetic_score,omitempty"`
	NegativeAestheticScore float64 `json:"negative_aesthetic_score,omitempty"`
}

// Work returns the job's work in megapixel-steps: images × width × height
// × steps / 1e6, with img2img's steps scaled by its strength.
func (p *Params) Work() float64 {
	steps := float64(p.Steps)
	if p.InitImage != "" && p.Strength > 0 && p.Strength < 1 {
		steps = math.Ceil(steps * p.Strength)
	}
	return float64(max(p.N, 1)) * float64(p.Width) * float64(p.Height) * steps / 1e6
}

// Image is one generated image of a job.
type Image struct {
	ID     string `json:"id"`
	Seed   uint64 `json:"seed"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
}

// Error says why a job failed.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes of failed jobs.
const (
	ErrCodeEngine     = "engine_error"      // the model failed
	ErrCodeModel      = "model_unavailable" // the model could not be loaded
	ErrCodeAttempts   = "attempts_exhausted"
	ErrCodeLost       = "lost"
	ErrCodeBadRequest = "invalid_job"
)

// Job is the durable record of one request.
type Job struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	Status string `json:"status"`
	Params Params `json:"params"`
	// Source is "api" or "openai".
	Source     string     `json:"source,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// Attempts counts deliveries to workers.
	Attempts        int     `json:"attempts"`
	Worker          string  `json:"worker,omitempty"`
	Images          []Image `json:"images,omitempty"`
	Error           *Error  `json:"error,omitempty"`
	CancelRequested bool    `json:"cancel_requested,omitempty"`
	// Weight is the tenant's fair-queuing weight when the job was submitted
	// (0 counts as 1).
	Weight float64 `json:"weight,omitempty"`
	// Adjustments are the changes the adaptive quality policy made to the
	// request before it was queued.
	Adjustments []Adjustment `json:"adjustments,omitempty"`
	// Memory says how the worker recovered when the job's batch ran out of
	// device memory (absent: it did not).
	Memory *MemoryRecovery `json:"memory,omitempty"`
}

// MemoryRecovery is what the worker did when a job's batch ran out of
// device memory: split it (Splits halvings, last chunk of Chunk images
// or denoiser rows), moved the other models off the device (FreedOthers),
// and ran the model sequentially, one stage's components on the device
// at a time (Sequential: also set for a model loaded that way because it
// does not fit the budget whole).
type MemoryRecovery struct {
	Splits      int  `json:"splits"`
	Chunk       int  `json:"chunk"`
	FreedOthers bool `json:"freed_others"`
	Sequential  bool `json:"sequential,omitempty"`
}

// AdjustedHeaderName is the response header listing a job's adjustments.
const AdjustedHeaderName = "Kiln-Adjusted"

// AdjustedHeader formats adjustments for the Kiln-Adjusted header:
// "steps=25->12, width=128->96" ("" for none).
func AdjustedHeader(adj []Adjustment) string {
	var b strings.Builder
	for i, a := range adj {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%v->%v", a.Field, a.From, a.To)
	}
	return b.String()
}

// Adjustment is one parameter the adaptive quality policy changed: from
// the requested value to the queued one, and why.
type Adjustment struct {
	Field  string `json:"field"`
	From   any    `json:"from"`
	To     any    `json:"to"`
	Reason string `json:"reason,omitempty"`
}

// NewID returns a time-ordered identifier: 10 characters of millisecond
// timestamp and 16 of randomness in Crockford base32 (lowercase), so that
// identifiers sort by creation time.
func NewID() string {
	return newIDAt(time.Now())
}

const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

func newIDAt(t time.Time) string {
	var b [26]byte
	ms := uint64(t.UnixMilli())
	for i := 9; i >= 0; i-- {
		b[i] = crockford[ms&31]
		ms >>= 5
	}
	var r [10]byte
	if _, err := rand.Read(r[:]); err != nil {
		panic(fmt.Sprintf("jobs: crypto/rand failed: %v", err))
	}
	var acc uint64
	bits, j := 0, 10
	for _, x := range r { // 80 random bits → 16 characters
		acc = acc<<8 | uint64(x)
		bits += 8
		for bits >= 5 {
			bits -= 5
			b[j] = crockford[(acc>>uint(bits))&31]
			j++
		}
	}
	return string(b[:])
}

// ValidID reports whether s has the form NewID makes.
func ValidID(s string) bool {
	if len(s) != 26 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune(crockford, rune(s[i])) {
			return false
		}
	}
	return true
}

// ImageID names image i of a job.
func ImageID(jobID string, i int) string { return fmt.Sprintf("%s-%d", jobID, i) }

// ParseImageID splits an image id into its job id and index.
func ParseImageID(s string) (jobID string, index int, ok bool) {
	j, idx, found := strings.Cut(s, "-")
	if !found || !ValidID(j) || idx == "" || len(idx) > 3 {
		return "", 0, false
	}
	n := 0
	for _, c := range idx {
		if c < '0' || c > '9' {
			return "", 0, false
		}
		n = n*10 + int(c-'0')
	}
	if idx != fmt.Sprint(n) {
		return "", 0, false
	}
	return j, n, true
}

// ValidTenantID reports whether s can name a tenant: 1-32 characters of
// lowercase letters, digits, '-' and '_', starting with a letter or digit.
// Tenant ids appear in NATS subjects and KV keys.
func ValidTenantID(s string) bool {
	if s == "" || len(s) > 32 || s[0] == '-' || s[0] == '_' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
