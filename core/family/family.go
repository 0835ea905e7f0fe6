// Package family is the seam between the generation pipeline and the
// model families (SD 1.x/2.x, SDXL, …). A family lives in one folder under
// core/model/ and implements Family: it recognises its checkpoints, reads
// their configs and weights, builds its networks on a backend and declares
// its defaults. core/pipeline drives any Model through this interface
// (conditioning → denoiser → latent codec) and never asks which family it
// holds. core/model/families lists the families Kiln serves.
package family

import (
	"context"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/conditioning"
	"github.com/kiln-project/kiln/core/safetensors"
)

// Family is one model family.
type Family interface {
	// Name names the family in logs and errors ("sd" for SD 1.x/2.x).
	Name() string
	// Claims reports whether the checkpoint sig describes is this
	// family's (a diffusers pipeline class, or a single file's tensors).
	Claims(sig Signature) bool
	// Open reads a checkpoint of the family: configs and memory-mapped
	// weights, every tensor checked against the configs, no network
	// built yet.
	Open(path string, opts OpenOptions) (Checkpoint, error)
	// Inspect returns a checkpoint's defaults as cheaply as the layout
	// allows (a catalog lists many models and loads none).
	Inspect(path string) (Defaults, error)
}

// OpenOptions adjust how a family reads a checkpoint.
type OpenOptions struct {
	// TokenizerDir is the tokenizer folder for a single-file checkpoint
	// ("": a tokenizer/ folder beside the file).
	TokenizerDir string
	// Variant selects weight files such as "*.fp16.safetensors".
	Variant string
	// Prediction overrides the scheduler's prediction type ("epsilon",
	// "v_prediction"; "" keeps the checkpoint's).
	Prediction string
}

// Checkpoint is an opened checkpoint of one family.
type Checkpoint interface {
	// Defaults are the model's defaults, read from its configs.
	Defaults() Defaults
	// Components are the model's networks and their weights, text
	// encoders first in order (content hashes of those key the
	// text-encoder cache), for hashing, memory accounting and offload.
	Components() []Component
	// Build builds the networks on be. The Model owns the checkpoint
	// from then on (its Close closes it); on error the checkpoint stays
	// the caller's.
	Build(be backend.Backend) (Model, error)
	// Close releases the checkpoint's files.
	Close() error
}

// Parts gives the backend each component's weights go to, by the
// component's Kind: a memory manager hands each component its own weight
// group (to load them one at a time) or a quantising view (to store one
// component's weights in 8 bits).
type Parts func(kind string) backend.Backend

// PartBuilder is implemented by checkpoints that can build each
// component on its own backend view (all views of one device). Build(be)
// must equal BuildParts(func(string) backend.Backend { return be }).
type PartBuilder interface {
	BuildParts(be Parts) (Model, error)
}

// Component is one network of a checkpoint.
type Component struct {
	// Kind names it as diffusers' folders do: "text_encoder",
	// "text_encoder_2", "unet", "transformer", "vae".
	Kind string
	// Weights are its tensors.
	Weights safetensors.Source
	// TextEncoder marks a text encoder.
	TextEncoder bool
	// Codec marks the latent codec, which runs on a bf16 view of a
	// backend whose activations are fp16 (fp16 overflows there).
	Codec bool
}

// Guidance is how a family's denoiser is guided.
type Guidance int

const (
	// GuidanceCFG is classifier-free guidance: an unconditional and a
	// conditional evaluation per image, mixed by the guidance scale.
	GuidanceCFG Guidance = iota
	// GuidanceTrueCFG is Qwen-Image's true CFG: the prompt and the
	// negative prompt (each at its own length) evaluated separately,
	// mixed by the scale, and each token's guided vector rescaled to the
	// norm of the conditional one. A family with it runs its own loop
	// (Generator).
	GuidanceTrueCFG
)

// Defaults are what a family declares about one model.
type Defaults struct {
	// Width and Height are the native image size in pixels.
	Width, Height int
	// Factor is the latent codec's downsampling factor: image sides must
	// divide by it.
	Factor int
	// LatentChannels is the number of latent channels.
	LatentChannels int
	// DenoiserChannels is the denoiser's input channels when they differ
	// from LatentChannels: 2·LatentChannels+1 for an inpainting UNet,
	// which also takes the mask and the masked image's latents (0: the
	// latents alone).
	DenoiserChannels int
	// ContextDim is the width of the hidden states Model.Encode returns.
	ContextDim int
	// Guidance is the guidance style.
	Guidance Guidance
	// LatentRGB maps latents to RGB for previews (nil: none).
	LatentRGB *LatentRGB
	// SchedulerConfig is the diffusers scheduler_config.json.
	SchedulerConfig []byte
	// Steps and GuidanceScale are the family's recommended inference
	// steps and guidance scale (0: the caller's profile decides).
	Steps         int
	GuidanceScale float64
	// Sampler names the sampler of a family that runs its own loop
	// (family.Generator), which takes no other ("": the shared samplers,
	// the scheduler config's by default).
	Sampler string
	// ZeroEmptyNegative makes an empty negative prompt condition on zeros
	// (hidden states and pooled output) instead of the encoding of ""
	// (SDXL base's force_zeros_for_empty_prompt).
	ZeroEmptyNegative bool
}

// Micro is the micro-conditioning a request may set for families that
// take it (SDXL): sizes are (height, width) in pixels, crops (top, left);
// zero sizes mean the image's size, zero scores the family's defaults.
type Micro struct {
	OriginalSize, CropTopLeft, TargetSize                         [2]int
	NegativeOriginalSize, NegativeCropTopLeft, NegativeTargetSize [2]int
	AestheticScore, NegativeAestheticScore                        float64
}

// IsZero reports whether m sets nothing.
func (m Micro) IsZero() bool { return m == Micro{} }

// ExtraInput describes the image whose extra conditioning Model.Extra
// returns.
type ExtraInput struct {
	Width, Height int
	// Img2Img marks an image-to-image job (diffusers builds some defaults
	// differently there).
	Img2Img bool
	Micro   Micro
}

// Model is a built model of some family: its conditioning, denoiser and
// latent codec. It is not safe for concurrent use (its backend is not).
type Model interface {
	// Defaults returns the model's defaults.
	Defaults() Defaults
	// Encode encodes one prompt with every text encoder of the model:
	// hidden states (1, Length, ContextDim) — several encoders'
	// concatenated along the width — and the pooled output when the
	// family uses one.
	Encode(ctx context.Context, text string, opts conditioning.Options) (conditioning.Result, error)
	// Extra returns the extra conditioning of one image (such as SDXL's
	// micro-conditioning) for its conditional and its unconditional rows,
	// nil when the family has none; it fails on settings the family
	// cannot honour (micro-conditioning for a family without it).
	Extra(in ExtraInput) (cond, uncond []float32, err error)
	// Denoise runs the denoiser once over a batch whose rows each carry
	// their own timestep and conditioning, and returns the model output
	// (the shape of in.X).
	Denoise(ctx context.Context, in DenoiseInput) ([]float32, error)
	// EncodeImage encodes (N, 3, H, W) pixels in [-1, 1] to the latent
	// posterior's mean and log-variance (not yet in the denoiser's scale).
	EncodeImage(ctx context.Context, pixels []float32, shape [4]int) (mean, logvar []float32, latentShape [4]int, err error)
	// DecodeLatents decodes latents in the codec's scale to (N, 3, H, W)
	// pixels in [-1, 1].
	DecodeLatents(ctx context.Context, latents []float32, shape [4]int) (pixels []float32, pixelShape [4]int, err error)
	// ToDenoiser maps codec latents to the denoiser's scale in place;
	// FromDenoiser maps them back.
	ToDenoiser(latents []float32, shape [4]int) error
	FromDenoiser(latents []float32, shape [4]int) error
	// Close releases the model's weights and files.
	Close() error
}

// DenoiseInput is one denoiser call.
type DenoiseInput struct {
	// X is the (rows, C, H, W) latent batch, already scaled for the
	// sampler's model input.
	X     []float32
	Shape [4]int
	// Timesteps holds one model timestep per row.
	Timesteps []float32
	// Context is (rows, ContextLen, ContextDim) hidden states.
	Context    []float32
	ContextLen int
	// Pooled is (rows, pooled width) when the family uses pooled text
	// outputs, else nil.
	Pooled []float32
	// Extra is (rows, extra width) when the family has extra
	// conditioning, else nil.
	Extra []float32
}

// Generator is implemented by a Model that runs its own sampling loop
// (flow-matching transformers: the sampler's shift depends on the image
// token count, true CFG mixes rows of different text lengths). The
// pipeline then resolves the request (sizes, seeds, noise, the init
// image's posterior sample) and decodes the latents; the loop is the
// family's.
type Generator interface {
	// Generate denoises one image and returns its (1, C, H/f, W/f)
	// latents in the denoiser's scale.
	Generate(ctx context.Context, in GenerateInput) ([]float32, error)
}

// GenerateInput is one image of a Generator's job.
type GenerateInput struct {
	Prompt, NegativePrompt string
	// Guidance is the guidance scale (≤ 1: the prompt alone).
	Guidance      float64
	Width, Height int
	Steps         int
	// Noise is the (1, C, H/f, W/f) unit noise.
	Noise []float32
	// Init, for image-to-image, is the init image's (1, C, H/f, W/f)
	// latents in the denoiser's scale, noised to the last
	// Strength·Steps steps; nil for text-to-image.
	Init     []float32
	Strength float64
	// OnStep, when not nil, is called after every step with the steps
	// done, the steps to run and the step's timestep; its error stops
	// the loop.
	OnStep func(step, steps int, timestep float64) error
}
