// Package pipeline runs text-to-image and image-to-image generation as
// diffusers' pipelines do, for any model family (core/family): prompt
// conditioning, torch-compatible initial noise, the sampler loop with
// classifier-free guidance as one batched denoiser call, and latent
// decoding. The family supplies the networks and its defaults; the
// pipeline never asks which family it drives. A job of n images runs as
// one batch; by default image i draws its noise from its own generator
// seeded with seed+i, so any image can be regenerated alone.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/conditioning"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/core/model/families"
	"github.com/kiln-project/kiln/core/rng"
	"github.com/kiln-project/kiln/core/sample"
)

// Limits on a request, to refuse absurd work before allocating it.
const (
	MaxImages = 64
	MaxSide   = 4096
	MaxSteps  = 1000
)

// Request describes one generation job.
type Request struct {
	// Micro is the micro-conditioning of families that take it (SDXL);
	// zero: the family's defaults.
	Micro                  family.Micro
	Prompt, NegativePrompt string
	// Prompt2 and NegativePrompt2 go to a family's second text encoder
	// (SDXL's prompt_2 and negative_prompt_2; "": the same as Prompt and
	// NegativePrompt). An empty negative conditions on zeros where the
	// family says so only when both negatives are empty.
	Prompt2, NegativePrompt2 string
	// Width and Height are the image size in pixels (0: the model's
	// default, or the init image's size); both must divide by the VAE
	// downsampling factor.
	Width, Height int
	// Steps is the number of inference steps (0: 20). For img2img only
	// the last Strength·Steps of them run.
	Steps int
	// N is the number of images, generated as one batch (0: 1).
	N int
	// ClipSkip counts layers from the end of the text encoder as
	// AUTOMATIC1111 does: 0 or 1 use the last layer, 2 the penultimate.
	ClipSkip int
	// Guidance is the classifier-free guidance scale; at 1 or below the
	// model runs without the unconditional half.
	Guidance float64
	// GuidanceRescale is the φ of Lin et al. 2023 (0 = off).
	GuidanceRescale float64
	// Strength is img2img's denoising strength in (0, 1].
	Strength float64
	// Sampler names the sampler (see sample.Names); "" uses the model's
	// scheduler configuration as it is.
	Sampler string
	// Eta is DDIM's stochasticity (0 = deterministic).
	Eta float64
	// Seed seeds image 0's generator; image i uses Seed+i.
	Seed uint64
	// RNG is the noise generator: "cpu" (torch CPU, the default) or
	// "cuda" (torch CUDA Philox).
	RNG string
	// SharedGenerator draws the whole batch's noise from one generator
	// seeded with Seed, as diffusers does with a single torch.Generator,
	// instead of one generator per image.
	SharedGenerator bool
	// InitImage turns the job into img2img; it is resized to Width×Height
	// when those are set and differ.
	InitImage image.Image
	// InitPixels is an alternative to InitImage: a (1, 3, Height, Width)
	// image in [0, 1], used as is (no 8-bit rounding).
	InitPixels []float32
	// Emphasis parses the A1111 emphasis syntax; off tokenizes literally.
	Emphasis bool
	// Truncate cuts prompts to one 75-token chunk (as diffusers does)
	// instead of encoding further chunks.
	Truncate bool
	// Noise, when set, is the initial noise (N, C, H/f, W/f) instead of the
	// generators' first draw; later noise still comes from the generators.
	Noise []float32
	// SkipDecode leaves Images and Pixels empty (latents only).
	SkipDecode bool
	// DenoisingEnd in (0, 1) stops the schedule early, as diffusers'
	// denoising_end does: only the evaluations at timesteps of at least
	// round(T − DenoisingEnd·T) run, and the latents (Result.Latents) are
	// those of that point, for a refiner to finish (see Refine).
	DenoisingEnd float64
	// InitLatents, with DenoisingStart in (0, 1), starts the schedule where
	// a DenoisingEnd run stopped, from those (N, C, H/f, W/f) latents in
	// the denoiser's scale and without adding noise (diffusers' refiner
	// with denoising_start).
	InitLatents    []float32
	DenoisingStart float64
	// Variation holds A1111's variation-seed settings (zero: off).
	Variation Variation
	// Edit holds the inpainting and outpainting settings (zero: off).
	Edit Edit
	// LoRAs are applied to this job alone (unmerged: jobs with other
	// LoRAs, or none, share its batch).
	LoRAs []lora.Use
	// Embeddings are the textual-inversion embeddings the prompts may
	// name (a name in a prompt is replaced by its vectors).
	Embeddings []*lora.Embedding
	// Hires adds AUTOMATIC1111's hires fix (zero: off).
	Hires Hires

	hires *hiresInit // a hires second pass's starting point (set by secondPass)
}

// Progress reports one finished model evaluation.
type Progress struct {
	// Step counts the evaluations done so far (1-based); Steps is the
	// total for this job (Heun evaluates twice per step).
	Step, Steps int
	// Timestep is the model timestep of this evaluation.
	Timestep float64
	// Preview is the predicted clean image mapped to RGB at latent
	// resolution through the model's latent-to-RGB matrix, the batch's
	// images side by side; nil when the model has no such matrix.
	Preview *image.RGBA
	// Latents are the batch latents after this evaluation; valid only
	// during the callback.
	Latents []float32
	// Eval identifies the model evaluation that made this step within one
	// Generate or GenerateBatch call (1, 2, …): jobs of a batch that report
	// the same Eval shared one UNet call.
	Eval int
	// Batch is the number of images that evaluation ran (every job that
	// shared it; the unconditional half of guidance not counted).
	Batch int
	// StepTime is the evaluation's wall time: the UNet call and the
	// sampler steps of every job that shared it (previews and callbacks
	// not included).
	StepTime time.Duration
}

// Result is a finished job.
type Result struct {
	// Images are the decoded images, 8-bit.
	Images []*image.RGBA
	// Pixels are the decoded images in [0, 1], (N, 3, H, W), before 8-bit
	// rounding; PixelShape is their shape.
	Pixels     []float32
	PixelShape [4]int
	// Latents are the final latents (N, C, H/f, W/f) in the UNet's scale.
	Latents     []float32
	LatentShape [4]int
	// Seeds holds each image's seed.
	Seeds []uint64
	// Subseeds holds each image's variation seed (nil without variation).
	Subseeds []uint64
	// Warnings are notes on settings likely to give poor images (a size
	// far from the model's native one, say).
	Warnings []string
	// Sampler is the sampler that ran (resolved name).
	Sampler string
	// HiresFrom is a hires job's first-pass size (width, height); zero
	// otherwise.
	HiresFrom [2]int
}

// Pipeline is a loaded model ready to generate. It is not safe for
// concurrent use (its backend is not).
type Pipeline struct {
	m     family.Model
	def   family.Defaults
	sched *sample.Config
	hook  func(ctx context.Context, text string, opts conditioning.Options, encode EncodeFunc) (conditioning.Result, error)
	// tileAbove and tile configure tiled decoding (see SetTiling).
	tileAbove, tile int
	// rec is the out-of-memory recovery (SetMemoryRecovery); report
	// accumulates what recovery did (TakeMemoryReport).
	rec    memory.Recovery
	report memory.Report
}

// EncodeFunc encodes one prompt with the model's text encoders.
type EncodeFunc = func(ctx context.Context, text string, opts conditioning.Options) (conditioning.Result, error)

// SetEncodeHook routes every prompt encoding of later jobs (prompt,
// negative prompt, and the empty chunk that pads prompts of different
// lengths) through hook, which may answer by itself — from a cache — or
// call encode, the text encoder. The pipeline never modifies the result a
// hook returns, and checks its layout. nil removes the hook. Like the
// rest of the pipeline it must not be called while a job runs.
func (p *Pipeline) SetEncodeHook(hook func(ctx context.Context, text string, opts conditioning.Options, encode EncodeFunc) (conditioning.Result, error)) {
	p.hook = hook
}

// encode encodes one prompt, through the hook when one is set.
func (p *Pipeline) encode(ctx context.Context, text string, opts conditioning.Options) (conditioning.Result, error) {
	if p.hook == nil {
		return p.m.Encode(ctx, text, opts)
	}
	r, err := p.hook(ctx, text, opts, p.m.Encode)
	if err != nil {
		return r, err
	}
	if d := p.def.ContextDim; r.Dim != d || r.Length < 1 || len(r.Hidden) != r.Length*r.Dim {
		return r, fmt.Errorf("encode hook answered %d values as %d×%d, want a length ≥ 1 × width %d", len(r.Hidden), r.Length, r.Dim, d)
	}
	return r, nil
}

// Load opens a model (diffusers folder or single-file checkpoint) with the
// family that claims it (core/model/families) and builds it on be.
func Load(ctx context.Context, be backend.Backend, modelPath string) (*Pipeline, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cp, err := families.All().Open(modelPath, family.OpenOptions{})
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	m, err := cp.Build(be)
	if err != nil {
		cp.Close()
		return nil, err
	}
	p, err := New(m)
	if err != nil {
		m.Close()
		return nil, err
	}
	return p, nil
}

// New makes a pipeline over a built model of any family; the pipeline owns
// m and closes it in Close.
func New(m family.Model) (*Pipeline, error) {
	p := &Pipeline{m: m, def: m.Defaults()}
	var err error
	if _, own := m.(family.Generator); own {
		// the family's loop builds its own sampler (see generateOwn)
		p.sched = &sample.Config{ClassName: ownSampler}
	} else if p.sched, err = sample.ParseConfig(p.def.SchedulerConfig); err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	if p.def.Factor < 1 || p.def.LatentChannels < 1 || p.def.ContextDim < 1 || p.def.Width < 1 || p.def.Height < 1 {
		return nil, fmt.Errorf("pipeline: the model declares incomplete defaults %+v", p.def)
	}
	return p, nil
}

// Close releases the model.
func (p *Pipeline) Close() error {
	if p.m != nil {
		return p.m.Close()
	}
	return nil
}

// Model returns the model the pipeline drives.
func (p *Pipeline) Model() family.Model { return p.m }

// Factor is the latent codec's downsampling factor: image sides must
// divide by it.
func (p *Pipeline) Factor() int { return p.def.Factor }

// DefaultSize is the model's native image size in pixels.
func (p *Pipeline) DefaultSize() (width, height int) { return p.def.Width, p.def.Height }

// DefaultSampler is the sampler the model's scheduler config selects.
func (p *Pipeline) DefaultSampler() (string, error) { return p.sched.DefaultSampler() }

// SetSchedulerConfig replaces the scheduler configuration that requests
// without an explicit sampler use (and that named samplers start from).
func (p *Pipeline) SetSchedulerConfig(c *sample.Config) { p.sched = c.Clone() }

// SchedulerConfig returns the model's scheduler configuration.
func (p *Pipeline) SchedulerConfig() *sample.Config { return p.sched.Clone() }

// job is the resolved state of one Generate call.
type job struct {
	req        Request
	n          int
	c, h, w    int // latent channels and size
	per        int // latent values per image
	gens       []rng.Generator
	seeds      []uint64
	cfg        bool
	img2img    bool
	initPixels []float32
	subseeds   []uint64
	edit       *editState
	warnings   []string
}

// resolve validates a request and fills its defaults.
func (p *Pipeline) resolve(req Request) (*job, error) {
	j := &job{req: req}
	if req.N == 0 {
		req.N = 1
	}
	if req.Steps == 0 {
		req.Steps = 20
	}
	f := p.def.Factor
	req, err := expandCanvas(req, f, p.def.Width, p.def.Height)
	if err != nil {
		return nil, err
	}
	if req.InitImage != nil && req.InitPixels != nil {
		return nil, errors.New("pipeline: give InitImage or InitPixels, not both")
	}
	if req.InitImage != nil {
		b := req.InitImage.Bounds()
		if b.Dx() <= 0 || b.Dy() <= 0 {
			return nil, errors.New("pipeline: init image is empty")
		}
		if req.Width == 0 && req.Height == 0 {
			req.Width, req.Height = b.Dx()/f*f, b.Dy()/f*f
		}
	}
	if req.Width == 0 {
		req.Width = p.def.Width
	}
	if req.Height == 0 {
		req.Height = p.def.Height
	}
	switch {
	case req.N < 1 || req.N > MaxImages:
		return nil, fmt.Errorf("pipeline: n must be in 1..%d, got %d", MaxImages, req.N)
	case req.Steps < 1 || req.Steps > MaxSteps:
		return nil, fmt.Errorf("pipeline: steps must be in 1..%d, got %d", MaxSteps, req.Steps)
	case req.Width <= 0 || req.Height <= 0 || req.Width > MaxSide || req.Height > MaxSide:
		return nil, fmt.Errorf("pipeline: size %dx%d must be within 1..%d", req.Width, req.Height, MaxSide)
	case req.Width%f != 0 || req.Height%f != 0:
		return nil, fmt.Errorf("pipeline: size %dx%d is not divisible by the VAE factor %d", req.Width, req.Height, f)
	case math.IsNaN(req.Guidance) || math.IsInf(req.Guidance, 0):
		return nil, fmt.Errorf("pipeline: guidance %v is not a finite number", req.Guidance)
	case math.IsNaN(req.GuidanceRescale) || req.GuidanceRescale < 0 || req.GuidanceRescale > 1:
		return nil, fmt.Errorf("pipeline: guidance rescale %v must be in [0, 1]", req.GuidanceRescale)
	case req.ClipSkip < 0:
		return nil, fmt.Errorf("pipeline: clip skip %d must not be negative", req.ClipSkip)
	}
	j.img2img = req.InitImage != nil || req.InitPixels != nil || req.hires != nil
	if req.hires != nil {
		if !(req.Strength > 0 && req.Strength <= 1) {
			return nil, fmt.Errorf("pipeline: hires denoise %v must be in (0, 1]", req.Strength)
		}
	} else if j.img2img {
		if !(req.Strength > 0 && req.Strength <= 1) {
			return nil, fmt.Errorf("pipeline: strength %v must be in (0, 1] for img2img", req.Strength)
		}
		if req.InitPixels != nil {
			if len(req.InitPixels) != 3*req.Width*req.Height {
				return nil, fmt.Errorf("pipeline: init pixels hold %d values, want 3×%d×%d", len(req.InitPixels), req.Height, req.Width)
			}
			j.initPixels = req.InitPixels
		} else {
			j.initPixels = imageToPixels(req.InitImage, req.Width, req.Height)
		}
	} else if req.Strength != 0 {
		return nil, errors.New("pipeline: strength applies to img2img only (no init image given)")
	}
	j.n = req.N
	j.c = p.def.LatentChannels
	j.h, j.w = req.Height/f, req.Width/f
	j.per = j.c * j.h * j.w
	if req.Noise != nil && len(req.Noise) != j.n*j.per {
		return nil, fmt.Errorf("pipeline: noise holds %d values, want %d×%d×%d×%d", len(req.Noise), j.n, j.c, j.h, j.w)
	}
	if err := checkHandoff(req, j); err != nil {
		return nil, err
	}
	j.cfg = req.Guidance > 1
	if req.SharedGenerator {
		g, err := rng.New(req.RNG, req.Seed)
		if err != nil {
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		j.gens = []rng.Generator{g}
	}
	for i := 0; i < j.n; i++ {
		seed := req.Seed + uint64(i)
		if req.Variation.Strength != 0 {
			seed = req.Seed // A1111 keeps the seed for variations
		}
		if req.SharedGenerator {
			seed = req.Seed
		} else {
			g, err := rng.New(req.RNG, seed)
			if err != nil {
				return nil, fmt.Errorf("pipeline: %w", err)
			}
			j.gens = append(j.gens, g)
		}
		j.seeds = append(j.seeds, seed)
	}
	j.req = req
	if err := p.resolveEdits(j); err != nil {
		return nil, err
	}
	return j, nil
}

// draw returns standard normal noise for the whole batch with `per`
// values per image: one draw per image generator, or one draw of the whole
// batch from the shared generator.
func (j *job) draw(per int) []float32 {
	if len(j.gens) == 1 && j.req.SharedGenerator {
		return j.gens[0].Randn(per * j.n)
	}
	out := make([]float32, 0, per*j.n)
	for _, g := range j.gens {
		out = append(out, g.Randn(per)...)
	}
	return out
}

// conditioning encodes the prompts into the denoiser's context: (2N, L, D)
// with the unconditional half first when guidance is on, else (N, L, D);
// and the pooled outputs in the same row order when the encoders give
// them (else nil).
func (p *Pipeline) conditioning(ctx context.Context, j *job) ([]float32, int, []float32, error) {
	removeText, adapters, err := p.installText(j.req)
	if err != nil {
		return nil, 0, nil, err
	}
	defer removeText()
	opts := conditioning.Options{ClipSkip: j.req.ClipSkip, Emphasis: j.req.Emphasis, LongPrompts: !j.req.Truncate, Adapters: adapters, Embeddings: j.req.Embeddings}
	popts, nopts := opts, opts
	popts.Text2, nopts.Text2 = j.req.Prompt2, j.req.NegativePrompt2
	pos, err := p.encode(ctx, j.req.Prompt, popts)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("pipeline: prompt: %w", err)
	}
	d := pos.Dim
	parts := []conditioning.Result{pos}
	if j.cfg {
		var neg conditioning.Result
		if j.req.NegativePrompt == "" && j.req.NegativePrompt2 == "" && p.def.ZeroEmptyNegative {
			// zero conditioning, shaped like the prompt's
			neg = conditioning.Result{Hidden: make([]float32, len(pos.Hidden)), Length: pos.Length, Dim: pos.Dim,
				Pooled: make([]float32, len(pos.Pooled))}
		} else if neg, err = p.encode(ctx, j.req.NegativePrompt, nopts); err != nil {
			return nil, 0, nil, fmt.Errorf("pipeline: negative prompt: %w", err)
		}
		parts = []conditioning.Result{neg, pos}
	}
	// Prompts of different lengths (long prompts): pad the shorter with
	// the encoding of an empty chunk, as AUTOMATIC1111 does.
	L := 0
	for _, r := range parts {
		L = max(L, r.Length)
	}
	var empty []float32
	for k := range parts {
		if parts[k].Length < L {
			if empty == nil {
				e, err := p.encode(ctx, "", conditioning.Options{ClipSkip: j.req.ClipSkip, Adapters: adapters})
				if err != nil {
					return nil, 0, nil, fmt.Errorf("pipeline: empty prompt: %w", err)
				}
				empty = e.Hidden
			}
			// a fresh slice: the hook's answer is never modified
			h := append(make([]float32, 0, L*d), parts[k].Hidden...)
			for len(h) < L*d {
				h = append(h, empty...)
			}
			parts[k].Hidden = h[:L*d]
			parts[k].Length = L
		}
	}
	out := make([]float32, 0, len(parts)*j.n*L*d)
	var pooled []float32
	for _, r := range parts {
		for i := 0; i < j.n; i++ {
			out = append(out, r.Hidden...)
		}
	}
	if len(parts[0].Pooled) > 0 {
		for _, r := range parts {
			if len(r.Pooled) != len(parts[0].Pooled) {
				return nil, 0, nil, fmt.Errorf("pipeline: pooled outputs of %d and %d values", len(r.Pooled), len(parts[0].Pooled))
			}
			for i := 0; i < j.n; i++ {
				pooled = append(pooled, r.Pooled...)
			}
		}
	}
	return out, L, pooled, nil
}

// rescale applies guidance rescale (Lin et al. 2023, eq. 16) per image:
// the guided prediction is scaled to the standard deviation of the text
// prediction and blended with the unscaled one by phi.
func rescale(cfg, text []float32, n int, phi float64) {
	per := len(cfg) / n
	for i := 0; i < n; i++ {
		c := cfg[i*per : (i+1)*per]
		t := text[i*per : (i+1)*per]
		ratio := stddev(t) / stddev(c)
		if math.IsNaN(ratio) || math.IsInf(ratio, 0) {
			continue
		}
		for k := range c {
			v := float64(c[k])
			c[k] = float32(phi*(v*ratio) + (1-phi)*v)
		}
	}
}

// stddev is the sample standard deviation (n−1 denominator, as torch.std).
func stddev(a []float32) float64 {
	var mean float64
	for _, v := range a {
		mean += float64(v)
	}
	mean /= float64(len(a))
	var ss float64
	for _, v := range a {
		d := float64(v) - mean
		ss += d * d
	}
	return math.Sqrt(ss / float64(len(a)-1))
}

// encodeInit encodes the init image and samples the posterior for every
// image of the batch with its generator (mean + std·ε), scaled to the
// UNet's latent space.
func (p *Pipeline) encodeInit(ctx context.Context, j *job) ([]float32, error) {
	return p.encodePixels(ctx, j, j.initPixels, 1)
}

// encodePixels encodes m images (m, 3, H, W) in [0, 1] — one for the whole
// batch (m = 1) or one per image (m = N) — and samples each image's
// posterior with its generator (mean + std·ε), scaled to the UNet's latent
// space.
func (p *Pipeline) encodePixels(ctx context.Context, j *job, pixels []float32, m int) ([]float32, error) {
	px := make([]float32, len(pixels))
	for i, v := range pixels {
		px[i] = 2*v - 1
	}
	mean, logvar, lshape, err := p.encodeImage(ctx, px, [4]int{m, 3, j.req.Height, j.req.Width})
	if err != nil {
		return nil, fmt.Errorf("pipeline: vae encode: %w", err)
	}
	per := lshape[1] * lshape[2] * lshape[3]
	if per != j.per || lshape[0] != m {
		return nil, fmt.Errorf("pipeline: vae encoded to %v, want %d images of %d values", lshape, m, j.per)
	}
	std := make([]float32, len(logvar))
	for k, lv := range logvar {
		lv = min(max(lv, -30), 20)
		std[k] = float32(math.Exp(0.5 * float64(lv)))
	}
	var eps []float32
	if j.req.SharedGenerator && m == 1 {
		// diffusers encodes the single init image once, samples its
		// posterior once and repeats the latent for the batch.
		e := j.gens[0].Randn(per)
		for i := 0; i < j.n; i++ {
			eps = append(eps, e...)
		}
	} else {
		eps = j.draw(per)
	}
	x := make([]float32, j.n*per)
	for i := 0; i < j.n; i++ {
		src := (i % m) * per
		for k := 0; k < per; k++ {
			x[i*per+k] = mean[src+k] + std[src+k]*eps[i*per+k]
		}
	}
	if err := p.m.ToDenoiser(x, [4]int{j.n, j.c, j.h, j.w}); err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	return x, nil
}

// PixelsToImages converts (N, 3, H, W) pixels in [0, 1] to 8-bit images,
// rounding as diffusers' numpy_to_pil does.
func PixelsToImages(px []float32, shape [4]int) []*image.RGBA {
	n, h, w := shape[0], shape[2], shape[3]
	plane := h * w
	out := make([]*image.RGBA, n)
	for i := range out {
		out[i] = image.NewRGBA(image.Rect(0, 0, w, h))
	}
	// Rows are converted in parallel: at batch 8 and 512² this loop took
	// longer than the GPU's VAE decode when it ran on one core.
	rows := n * h
	workers := min(runtime.GOMAXPROCS(0), rows)
	chunk := (rows + workers - 1) / max(workers, 1)
	var wg sync.WaitGroup
	for start := 0; start < rows; start += chunk {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			for r := lo; r < hi; r++ {
				i, y := r/h, r%h
				im := out[i]
				pix := im.Pix[y*im.Stride : y*im.Stride+4*w]
				base := i*3*plane + y*w
				red, green, blue := px[base:base+w], px[base+plane:base+plane+w], px[base+2*plane:base+2*plane+w]
				for x := 0; x < w; x++ {
					pix[4*x] = to8(red[x])
					pix[4*x+1] = to8(green[x])
					pix[4*x+2] = to8(blue[x])
					pix[4*x+3] = 255
				}
			}
		}(start, min(start+chunk, rows))
	}
	wg.Wait()
	return out
}

// to8 maps [0, 1] to 0..255, rounding half up and clamping (NaN → 0).
func to8(v float32) uint8 {
	if !(v > 0) {
		return 0
	}
	if v >= 1 {
		return 255
	}
	return uint8(float64(v)*255 + 0.5)
}

// imageToPixels converts an image to (1, 3, h, w) values in [0, 1],
// resizing it bilinearly when its size differs.
func imageToPixels(im image.Image, w, h int) []float32 {
	b := im.Bounds()
	sw, sh := b.Dx(), b.Dy()
	px := make([]float32, 3*w*h)
	sample := func(x, y int) [3]float64 {
		r, g, bb, _ := im.At(b.Min.X+x, b.Min.Y+y).RGBA()
		return [3]float64{float64(r) / 65535, float64(g) / 65535, float64(bb) / 65535}
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var v [3]float64
			if sw == w && sh == h {
				v = sample(x, y)
			} else {
				fx := (float64(x)+0.5)*float64(sw)/float64(w) - 0.5
				fy := (float64(y)+0.5)*float64(sh)/float64(h) - 0.5
				x0, y0 := int(math.Floor(fx)), int(math.Floor(fy))
				ax, ay := fx-float64(x0), fy-float64(y0)
				cl := func(v, hi int) int { return min(max(v, 0), hi-1) }
				p00, p10 := sample(cl(x0, sw), cl(y0, sh)), sample(cl(x0+1, sw), cl(y0, sh))
				p01, p11 := sample(cl(x0, sw), cl(y0+1, sh)), sample(cl(x0+1, sw), cl(y0+1, sh))
				for c := 0; c < 3; c++ {
					v[c] = (p00[c]*(1-ax)+p10[c]*ax)*(1-ay) + (p01[c]*(1-ax)+p11[c]*ax)*ay
				}
			}
			for c := 0; c < 3; c++ {
				px[c*w*h+y*w+x] = float32(v[c])
			}
		}
	}
	return px
}

// SamplerLabel is the AUTOMATIC1111 display name of a sampler name.
func SamplerLabel(name string) string {
	if l := sample.Label(name); l != name {
		return l
	}
	return strings.ToUpper(name[:min(1, len(name))]) + name[min(1, len(name)):]
}
