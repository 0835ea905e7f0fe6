// Package validate turns a job request into a plan: the normalised
// generation parameters with the profile's defaults applied, checked
// against the model list, the samplers, the profile's caps and the
// tenant's limits. Plans are cached in a Ristretto cache keyed by tenant,
// quota version, model list version and the normalised parameters, so
// repeated request shapes skip the checks; a change of models or quotas
// changes the key.
package validate

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/kiln-project/kiln/core/sample"
	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/server/loralib"
)

// Limits that no tenant may exceed.
const (
	MaxPromptChars = 4000
	MaxSide        = 4096
	MinSide        = 64
	MaxGuidance    = 30.0
	MaxClipSkip    = 12
	// MaxSeed keeps seeds exact in JavaScript numbers.
	MaxSeed = 1<<53 - 1
)

// JobRequest is the body of POST /v1/jobs. Pointer fields are optional:
// absent means the profile's default.
type JobRequest struct {
	Prompt         string `json:"prompt"`
	NegativePrompt string `json:"negative_prompt,omitempty"`
	// Prompt2 and NegativePrompt2 go to SDXL's second text encoder
	// (diffusers' prompt_2 / negative_prompt_2; empty: the same as prompt
	// and negative_prompt).
	Prompt2         string   `json:"prompt_2,omitempty"`
	NegativePrompt2 string   `json:"negative_prompt_2,omitempty"`
	Model           string   `json:"model,omitempty"`
	Profile         string   `json:"profile,omitempty"`
	Width           *int     `json:"width,omitempty"`
	Height          *int     `json:"height,omitempty"`
	Steps           *int     `json:"steps,omitempty"`
	Guidance        *float64 `json:"guidance,omitempty"`
	Sampler         string   `json:"sampler,omitempty"`
	Seed            *uint64  `json:"seed,omitempty"`
	N               *int     `json:"n,omitempty"`
	ClipSkip        *int     `json:"clip_skip,omitempty"`
	// InitImage is a PNG or JPEG, base64 or as a data: URL (img2img).
	InitImage string   `json:"init_image,omitempty"`
	Strength  *float64 `json:"strength,omitempty"`
	Priority  string   `json:"priority,omitempty"`
	// SharedNoise draws the batch's noise from one generator seeded with
	// seed (ComfyUI's semantics) instead of one per image (seed+i).
	SharedNoise bool `json:"shared_noise,omitempty"`
	// AllowAdjust lets adaptive quality change parameters the request
	// sets explicitly (width, height, steps, sampler, profile).
	AllowAdjust bool `json:"allow_adjust,omitempty"`
	// Nodes names Wasm pre- and post-processing nodes:
	// {"pre": [{"name": "style", "params": {"preset": "anime"}}], "post": [...]}
	// (checked and run by the gateway's node hooks).
	Nodes json.RawMessage `json:"nodes,omitempty"`
	// LoRAs apply installed LoRAs (in addition to <lora:name:w> tags in
	// the prompt).
	LoRAs []LoRARequest `json:"loras,omitempty"`
	// FitNative marks Width and Height as a size chosen from a fixed menu
	// (the OpenAI endpoint's): for models trained at 1024² or more (SDXL)
	// it becomes the native resolution of the nearest aspect ratio (see
	// FitNative). Not part of the JSON body.
	FitNative bool `json:"-"`
	// AllowEmptyPrompt admits an empty prompt (the OpenAI variations
	// endpoint: the image alone guides the job). Not part of the JSON body.
	AllowEmptyPrompt bool `json:"-"`
	// Micro is SDXL's micro-conditioning (SDXL models only).
	Micro *jobs.Micro `json:"micro_conditioning,omitempty"`
	// Mask is the inpainting mask (PNG or JPEG, base64 or a data: URL;
	// white = repaint) for init_image; MaskBlur (pixels, default 4) and
	// InpaintFill ("original", "latent_noise", "latent_nothing"; default
	// diffusers' behaviour) apply to it and to Outpaint.
	Mask        string `json:"mask,omitempty"`
	MaskBlur    *int   `json:"mask_blur,omitempty"`
	InpaintFill string `json:"inpaint_fill,omitempty"`
	// Outpaint extends init_image's canvas by pixels on each side.
	Outpaint *jobs.Outpaint `json:"outpaint,omitempty"`
	// InpaintFullRes inpaints only the region around the mask, grown by
	// InpaintFullResPadding pixels (default 32), at width×height, and
	// pastes it back into the whole image.
	InpaintFullRes        bool `json:"inpaint_full_res,omitempty"`
	InpaintFullResPadding *int `json:"inpaint_full_res_padding,omitempty"`
	// Subseed and SubseedStrength are AUTOMATIC1111's variation seeds.
	Subseed         *uint64  `json:"subseed,omitempty"`
	SubseedStrength *float64 `json:"subseed_strength,omitempty"`
	// Hires is AUTOMATIC1111's hires fix (see HiresRequest).
	Hires *HiresRequest `json:"hires,omitempty"`
}

// nativeBuckets are SDXL's training resolutions (width, height) at its
// 1024² native area: every aspect ratio a request is fitted to.
var nativeBuckets = [][2]int{
	{1024, 1024}, {1152, 896}, {896, 1152}, {1216, 832}, {832, 1216},
	{1344, 768}, {768, 1344}, {1536, 640}, {640, 1536},
}

// FitNative maps a requested size to the resolution of the nearest aspect
// ratio among SDXL's training buckets, scaled from 1024² to the model's
// native area (nw × nh) and rounded to multiples of 64. Models with a
// native area below 1024² (SD 1.x/2.x) keep the requested size.
func FitNative(w, h, nw, nh int) (int, int) {
	if w <= 0 || h <= 0 || nw*nh < 1024*1024 {
		return w, h
	}
	want := math.Log(float64(w) / float64(h))
	best := nativeBuckets[0]
	for _, b := range nativeBuckets[1:] {
		if math.Abs(math.Log(float64(b[0])/float64(b[1]))-want) < math.Abs(math.Log(float64(best[0])/float64(best[1]))-want) {
			best = b
		}
	}
	scale := math.Sqrt(float64(nw*nh) / (1024 * 1024))
	round := func(v int) int { return max(64, int(math.Round(float64(v)*scale/64))*64) }
	return round(best[0]), round(best[1])
}

// Validator checks requests and caches plans. It is safe for concurrent use.
type Validator struct {
	models         *catalog.Registry
	profiles       atomic.Pointer[profileSet]
	defaultProfile string
	samplers       map[string]bool
	cache          *ristretto.Cache[string, *jobs.Params]
	hits, misses   atomic.Uint64
	lib            *loralib.Library // installed LoRAs and embeddings; nil: none
}

// New returns a validator with a plan cache of cacheBytes.
func New(reg *catalog.Registry, profiles map[string]config.Profile, defaultProfile string, cacheBytes int64) (*Validator, error) {
	if _, ok := profiles[defaultProfile]; !ok {
		return nil, fmt.Errorf("validate: default profile %q does not exist", defaultProfile)
	}
	c, err := ristretto.NewCache(&ristretto.Config[string, *jobs.Params]{
		NumCounters: max(1000, cacheBytes/256*10),
		MaxCost:     cacheBytes,
		BufferItems: 64,
	})
	if err != nil {
		return nil, fmt.Errorf("validate: plan cache: %w", err)
	}
	s := map[string]bool{}
	for _, n := range sample.Names() {
		s[n] = true
	}
	v := &Validator{models: reg, defaultProfile: defaultProfile, samplers: s, cache: c}
	v.profiles.Store(&profileSet{m: profiles})
	return v, nil
}

// profileSet is one version of the profiles.
type profileSet struct {
	m       map[string]config.Profile
	version uint64
}

// SetProfiles replaces the profiles (an operator changed one); plans made
// with the old ones are not reused. The default profile must remain.
func (v *Validator) SetProfiles(profiles map[string]config.Profile) error {
	if _, ok := profiles[v.defaultProfile]; !ok {
		return fmt.Errorf("validate: default profile %q would be gone", v.defaultProfile)
	}
	for {
		old := v.profiles.Load()
		if v.profiles.CompareAndSwap(old, &profileSet{m: profiles, version: old.version + 1}) {
			return nil
		}
	}
}

// Profiles returns the current profiles (read only).
func (v *Validator) Profiles() map[string]config.Profile { return v.profiles.Load().m }

// Close stops the plan cache.
func (v *Validator) Close() { v.cache.Close() }

// Stats returns plan cache hits, misses and hit ratio.
func (v *Validator) Stats() (hits, misses uint64, ratio float64) {
	hits, misses = v.hits.Load(), v.misses.Load()
	if hits+misses > 0 {
		ratio = float64(hits) / float64(hits+misses)
	}
	return hits, misses, ratio
}

// Samplers lists the accepted sampler names.
func (v *Validator) Samplers() []string {
	out := make([]string, 0, len(v.samplers))
	for n := range v.samplers {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Plan validates a request for a tenant and returns the job parameters.
// hasInit says whether the request carries an init image (decoded by the
// caller).
func (v *Validator) Plan(p auth.Principal, r *JobRequest, hasInit bool) (jobs.Params, *apierr.Error) {
	if strings.TrimSpace(r.Prompt) == "" && !r.AllowEmptyPrompt {
		return jobs.Params{}, apierr.Invalid("prompt", "prompt is required")
	}
	for _, f := range []struct{ name, text string }{{"prompt", r.Prompt}, {"negative_prompt", r.NegativePrompt},
		{"prompt_2", r.Prompt2}, {"negative_prompt_2", r.NegativePrompt2}} {
		if !utf8.ValidString(f.text) {
			return jobs.Params{}, apierr.Invalid(f.name, "%s is not valid UTF-8", f.name)
		}
		if n := utf8.RuneCountInString(f.text); n > MaxPromptChars {
			return jobs.Params{}, apierr.Limit(f.name, "%s has %d characters; the limit is %d", f.name, n, MaxPromptChars)
		}
	}
	key := v.key(p, r, hasInit)
	var params jobs.Params
	if cached, ok := v.cache.Get(key); ok {
		v.hits.Add(1)
		params = *cached
	} else {
		v.misses.Add(1)
		var err *apierr.Error
		params, err = v.plan(p, r, hasInit)
		if err != nil {
			return jobs.Params{}, err
		}
		cp := params
		v.cache.Set(key, &cp, int64(len(key))+256)
	}
	params.Prompt, params.NegativePrompt = r.Prompt, r.NegativePrompt
	if r.Prompt2 != "" || r.NegativePrompt2 != "" {
		if mm, ok := v.models.Get(params.Model); !ok || mm.Family != "sdxl" {
			field := "prompt_2"
			if r.Prompt2 == "" {
				field = "negative_prompt_2"
			}
			return jobs.Params{}, apierr.Invalid(field, "%s is for SDXL's second text encoder; %q has none", field, params.Model)
		}
	}
	params.Prompt2, params.NegativePrompt2 = r.Prompt2, r.NegativePrompt2
	params.Nodes = r.Nodes
	params.SharedNoise = r.SharedNoise
	if r.Micro != nil {
		if err := v.checkMicro(params.Model, r.Micro); err != nil {
			return jobs.Params{}, err
		}
		mc := *r.Micro
		params.Micro = &mc
	}
	if err := v.resolveLoRAs(p.Tenant, r, &params); err != nil {
		return jobs.Params{}, err
	}
	if r.Seed != nil {
		if *r.Seed > MaxSeed {
			return jobs.Params{}, apierr.Invalid("seed", "seed must be at most %d", uint64(MaxSeed))
		}
		params.Seed = *r.Seed
	} else {
		params.Seed = RandomSeed()
	}
	if err := planEdit(r, &params, hasInit); err != nil {
		return jobs.Params{}, err
	}
	if err := v.planHires(p, r, &params, hasInit); err != nil {
		return jobs.Params{}, err
	}
	return params, nil
}

// checkMicro accepts micro-conditioning only for SDXL models and within
// sane ranges.
func (v *Validator) checkMicro(model string, m *jobs.Micro) *apierr.Error {
	if mm, ok := v.models.Get(model); !ok || mm.Family != "sdxl" {
		return apierr.Invalid("micro_conditioning", "micro_conditioning applies to SDXL models; %q is not one", model)
	}
	for _, x := range []int{m.OriginalWidth, m.OriginalHeight, m.CropTop, m.CropLeft, m.TargetWidth, m.TargetHeight,
		m.NegativeOriginalWidth, m.NegativeOriginalHeight, m.NegativeCropTop, m.NegativeCropLeft, m.NegativeTargetWidth, m.NegativeTargetHeight} {
		if x < 0 || x > 16384 {
			return apierr.Invalid("micro_conditioning", "micro_conditioning sizes and crops must be from 0 to 16384, got %d", x)
		}
	}
	for _, s := range []float64{m.AestheticScore, m.NegativeAestheticScore} {
		if math.IsNaN(s) || s < 0 || s > 10 {
			return apierr.Invalid("micro_conditioning", "aesthetic scores must be from 0 to 10, got %v", s)
		}
	}
	return nil
}

// RandomSeed draws a seed below 2³² (as AUTOMATIC1111 does).
func RandomSeed() uint64 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return uint64(binary.LittleEndian.Uint32(b[:]))
}

func (v *Validator) key(p auth.Principal, r *JobRequest, hasInit bool) string {
	var b strings.Builder
	opt := func(x *int) string {
		if x == nil {
			return "-"
		}
		return fmt.Sprint(*x)
	}
	optf := func(x *float64) string {
		if x == nil {
			return "-"
		}
		return fmt.Sprint(*x)
	}
	fmt.Fprintf(&b, "%s|%d|%d|%d|%q|%q|%s|%s|%s|%s|%q|%s|%s|%t|%s|%q|%t",
		p.Tenant, p.QuotaVersion, v.models.Version(), v.profiles.Load().version, r.Model, r.Profile, opt(r.Width), opt(r.Height), opt(r.Steps),
		optf(r.Guidance), r.Sampler, opt(r.N), opt(r.ClipSkip), hasInit, optf(r.Strength), r.Priority, r.FitNative)
	return b.String()
}

// plan does the checks of a request shape.
func (v *Validator) plan(p auth.Principal, r *JobRequest, hasInit bool) (jobs.Params, *apierr.Error) {
	prof := r.Profile
	if prof == "" {
		prof = v.defaultProfile
	}
	profiles := v.Profiles()
	pr, ok := profiles[prof]
	if !ok {
		names := make([]string, 0, len(profiles))
		for n := range profiles {
			names = append(names, n)
		}
		sort.Strings(names)
		return jobs.Params{}, apierr.Invalid("profile", "unknown profile %q; choose one of %s", r.Profile, strings.Join(names, ", "))
	}
	out := jobs.Params{Profile: prof, Sampler: pr.Sampler, Steps: pr.Steps, Guidance: pr.Guidance,
		Width: pr.Width, Height: pr.Height, N: 1, Priority: jobs.PriorityNormal}

	out.Model = r.Model
	if out.Model == "" {
		out.Model = v.models.Default()
		if out.Model == "" {
			return jobs.Params{}, apierr.New(400, apierr.CodeNoModel, "model",
				"no model is installed; start kiln serve with --model name=path or put one in the models folder")
		}
	}
	model, ok := v.models.Get(out.Model)
	if !ok {
		return jobs.Params{}, apierr.New(400, apierr.CodeNoModel, "model", "unknown model %q (GET /v1/models lists them)", out.Model)
	}
	out.Width, out.Height = DefaultSize(model, pr, p.Quota)
	// the model family's recommended steps and guidance over the profile's
	if model.DefaultSteps > 0 {
		out.Steps = min(model.DefaultSteps, pr.MaxSteps, p.Quota.MaxSteps)
	}
	if model.DefaultGuidance > 0 {
		out.Guidance = model.DefaultGuidance
	}
	if model.Sampler != "" {
		out.Sampler = "" // the family's own loop samples
		if r.Sampler != "" && r.Sampler != model.Sampler {
			return jobs.Params{}, apierr.Invalid("sampler", "model %q samples with %s; it takes no other sampler", out.Model, model.Sampler)
		}
	}

	if r.Width != nil {
		out.Width = *r.Width
	}
	if r.Height != nil {
		out.Height = *r.Height
	}
	if r.FitNative && r.Width != nil && r.Height != nil {
		out.Width, out.Height = FitNative(out.Width, out.Height, model.NativeWidth, model.NativeHeight)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"width", out.Width}, {"height", out.Height}} {
		if f.v < MinSide || f.v > MaxSide || f.v%8 != 0 {
			return jobs.Params{}, apierr.Invalid(f.name, "%s must be a multiple of 8 from %d to %d, got %d", f.name, MinSide, MaxSide, f.v)
		}
	}
	pixels := out.Width * out.Height
	if pixels > p.Quota.MaxPixels {
		return jobs.Params{}, apierr.Limit("width", "%d×%d = %d pixels exceeds the tenant limit max_pixels=%d", out.Width, out.Height, pixels, p.Quota.MaxPixels)
	}
	if pixels > pr.MaxPixels {
		return jobs.Params{}, apierr.Limit("width", "%d×%d = %d pixels exceeds the %s profile's max_pixels=%d", out.Width, out.Height, pixels, prof, pr.MaxPixels)
	}

	if r.Steps != nil {
		out.Steps = *r.Steps
	}
	if out.Steps < 1 {
		return jobs.Params{}, apierr.Invalid("steps", "steps must be at least 1")
	}
	if out.Steps > p.Quota.MaxSteps {
		return jobs.Params{}, apierr.Limit("steps", "steps=%d exceeds the tenant limit max_steps=%d", out.Steps, p.Quota.MaxSteps)
	}
	if out.Steps > pr.MaxSteps {
		return jobs.Params{}, apierr.Limit("steps", "steps=%d exceeds the %s profile's max_steps=%d", out.Steps, prof, pr.MaxSteps)
	}

	if r.N != nil {
		out.N = *r.N
	}
	if out.N < 1 {
		return jobs.Params{}, apierr.Invalid("n", "n must be at least 1")
	}
	if out.N > p.Quota.MaxN {
		return jobs.Params{}, apierr.Limit("n", "n=%d exceeds the tenant limit max_n=%d", out.N, p.Quota.MaxN)
	}
	if out.N > pr.MaxN {
		return jobs.Params{}, apierr.Limit("n", "n=%d exceeds the %s profile's max_n=%d", out.N, prof, pr.MaxN)
	}

	if r.Guidance != nil {
		out.Guidance = *r.Guidance
	}
	if math.IsNaN(out.Guidance) || out.Guidance < 0 || out.Guidance > MaxGuidance {
		return jobs.Params{}, apierr.Invalid("guidance", "guidance must be from 0 to %g", MaxGuidance)
	}

	if r.Sampler != "" && model.Sampler == "" {
		if !v.samplers[r.Sampler] {
			return jobs.Params{}, apierr.Invalid("sampler", "unknown sampler %q; choose one of %s", r.Sampler, strings.Join(v.Samplers(), ", "))
		}
		out.Sampler = r.Sampler
	}
	if r.ClipSkip != nil {
		if *r.ClipSkip < 0 || *r.ClipSkip > MaxClipSkip {
			return jobs.Params{}, apierr.Invalid("clip_skip", "clip_skip must be from 0 to %d", MaxClipSkip)
		}
		out.ClipSkip = *r.ClipSkip
	}
	if r.Priority != "" {
		if !jobs.ValidPriority(r.Priority) {
			return jobs.Params{}, apierr.Invalid("priority", "priority must be low, normal or high")
		}
		out.Priority = r.Priority
	}
	switch {
	case r.Strength != nil && !hasInit:
		return jobs.Params{}, apierr.Invalid("strength", "strength applies only with init_image")
	case hasInit:
		out.Strength = 0.75
		if r.Strength != nil {
			out.Strength = *r.Strength
		}
		if math.IsNaN(out.Strength) || out.Strength <= 0 || out.Strength > 1 {
			return jobs.Params{}, apierr.Invalid("strength", "strength must be in (0, 1]")
		}
		if int(float64(out.Steps)*out.Strength) < 1 {
			return jobs.Params{}, apierr.Invalid("strength", "strength %g of %d steps leaves no step to run", out.Strength, out.Steps)
		}
	}
	return out, nil
}

// DefaultSize is the image size of a request that gives no width and
// height: the model's native size (what it was trained at) where it is
// known and within the profile's and the tenant's pixel caps, else the
// profile's width and height.
func DefaultSize(m catalog.Model, pr config.Profile, q config.Quota) (width, height int) {
	w, h := m.NativeWidth, m.NativeHeight
	if w >= MinSide && h >= MinSide && w <= MaxSide && h <= MaxSide && w%8 == 0 && h%8 == 0 &&
		w*h <= pr.MaxPixels && w*h <= q.MaxPixels {
		return w, h
	}
	return pr.Width, pr.Height
}

// CheckLimits re-checks parameters (for example after a quality policy
// changed them) against the tenant's limits and the profile's caps.
func (v *Validator) CheckLimits(p auth.Principal, params jobs.Params) *apierr.Error {
	w, h, s, n, g := params.Width, params.Height, params.Steps, params.N, params.Guidance
	r := &JobRequest{Prompt: params.Prompt, Model: params.Model, Profile: params.Profile, Width: &w, Height: &h,
		Steps: &s, N: &n, Guidance: &g, Sampler: params.Sampler, Priority: params.Priority}
	_, err := v.plan(p, r, false)
	return err
}
