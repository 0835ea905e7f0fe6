// Package sd is the Stable Diffusion 1.x/2.x model family: diffusers
// StableDiffusionPipeline folders and original (CompVis/LDM) single files
// (core/checkpoint), one CLIP or OpenCLIP text encoder
// (core/conditioning, core/model/clip), the UNet2DConditionModel
// (core/model/unet) and the AutoencoderKL (core/model/vae), behind the
// family.Family interface that core/pipeline drives.
package sd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/checkpoint"
	"github.com/kiln-project/kiln/core/conditioning"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/core/model/clip"
	"github.com/kiln-project/kiln/core/model/unet"
	"github.com/kiln-project/kiln/core/model/vae"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/core/tokenizer"
)

// pipelineClasses are the diffusers pipeline classes of the family.
var pipelineClasses = map[string]bool{"StableDiffusionPipeline": true, "StableDiffusionImg2ImgPipeline": true,
	"StableDiffusionInpaintPipeline": true}

// LatentRGB maps SD 1.x/2.x latents (4 channels) to RGB for previews: the
// published coefficients other tools use for this VAE.
var LatentRGB = family.LatentRGB{Factors: [][3]float64{
	{0.3512, 0.2297, 0.3227},
	{0.3250, 0.4974, 0.2350},
	{-0.2829, 0.1762, 0.2721},
	{-0.2120, -0.2616, -0.7177},
}}

// latentRGB is a model's preview map: the one its folder ships (dir may be
// empty for single files), else the family's for 4 latent channels.
func latentRGB(dir string, latentChannels int) (*family.LatentRGB, error) {
	if dir != "" {
		own, err := family.OwnLatentRGB(dir, latentChannels)
		if err != nil || own != nil {
			return own, err
		}
	}
	if latentChannels == 4 {
		m := LatentRGB
		return &m, nil
	}
	return nil, nil
}

// Family is the SD 1.x/2.x family.
type Family struct{}

var _ family.Family = Family{}

// Name implements family.Family.
func (Family) Name() string { return "sd" }

// Claims implements family.Family: the SD pipeline classes, and single
// files with an original-layout UNet and no SDXL-style conditioner.
func (Family) Claims(sig family.Signature) bool {
	if sig.PipelineClass != "" {
		return pipelineClasses[sig.PipelineClass]
	}
	return sig.HasPrefix(checkpoint.PrefixUNet) && !sig.HasPrefix("conditioner.")
}

// Open implements family.Family.
func (Family) Open(path string, opts family.OpenOptions) (family.Checkpoint, error) {
	m, err := checkpoint.Load(path, checkpoint.Options{TokenizerDir: opts.TokenizerDir, Variant: opts.Variant, Prediction: opts.Prediction})
	if err != nil {
		return nil, err
	}
	c := FromCheckpoint(m)
	if c.err != nil {
		m.Close()
		return nil, c.err
	}
	return c, nil
}

// Inspect implements family.Family: a diffusers folder's defaults come
// from its configs alone; a single file is opened (its configs are
// inferred from the tensors).
func (f Family) Inspect(path string) (family.Defaults, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		read := func(rel string) ([]byte, error) { return os.ReadFile(filepath.Join(path, rel)) }
		u, err := read("unet/config.json")
		if err != nil {
			return family.Defaults{}, fmt.Errorf("sd: %w", err)
		}
		v, err := read("vae/config.json")
		if err != nil {
			return family.Defaults{}, fmt.Errorf("sd: %w", err)
		}
		s, err := read("scheduler/scheduler_config.json")
		if err != nil {
			return family.Defaults{}, fmt.Errorf("sd: %w", err)
		}
		te, err := read("text_encoder/config.json")
		if err != nil {
			return family.Defaults{}, fmt.Errorf("sd: %w", err)
		}
		if _, _, _, err := NativeSize(u, v, nil); err != nil {
			return family.Defaults{}, fmt.Errorf("sd: %w", err)
		}
		return defaults(u, v, s, te, false)
	}
	cp, err := f.Open(path, family.OpenOptions{})
	if err != nil {
		return family.Defaults{}, err
	}
	defer cp.Close()
	return cp.Defaults(), nil
}

// Checkpoint is an opened SD checkpoint.
type Checkpoint struct {
	m   *checkpoint.Model
	def family.Defaults
	err error // defaults that could not be read; Build reports it
}

var _ family.Checkpoint = (*Checkpoint)(nil)

// Wraps reports whether m is an SD 1.x/2.x checkpoint (a checkpoint that
// names no family is one), for core/model/families.
func (Family) Wraps(m *checkpoint.Model) bool {
	return m.Family == "" || m.Family == checkpoint.FamilySD
}

// FromModel wraps a checkpoint built in memory (for core/model/families).
func (Family) FromModel(m *checkpoint.Model) (family.Checkpoint, error) {
	return FromCheckpoint(m), nil
}

// FromCheckpoint wraps a loaded checkpoint (for example a synthetic one
// built in memory); the result owns m.
func FromCheckpoint(m *checkpoint.Model) *Checkpoint {
	c := &Checkpoint{m: m}
	if m.Family != "" && m.Family != checkpoint.FamilySD {
		c.err = fmt.Errorf("sd: the checkpoint holds a %q model", m.Family)
		return c
	}
	c.def, c.err = defaults(m.UNetConfig, m.VAEConfig, m.SchedulerConfig, m.TextEncoderConfig, m.Layout == checkpoint.LayoutSingleFile)
	return c
}

// Model returns the underlying checkpoint.
func (c *Checkpoint) Model() *checkpoint.Model { return c.m }

// Defaults implements family.Checkpoint.
func (c *Checkpoint) Defaults() family.Defaults { return c.def }

// Components implements family.Checkpoint.
func (c *Checkpoint) Components() []family.Component {
	return []family.Component{
		{Kind: "text_encoder", Weights: c.m.TextEncoder, TextEncoder: true},
		{Kind: "unet", Weights: c.m.UNet},
		{Kind: "vae", Weights: c.m.VAE, Codec: true},
	}
}

// Close implements family.Checkpoint.
func (c *Checkpoint) Close() error { return c.m.Close() }

// Build implements family.Checkpoint.
func (c *Checkpoint) Build(be backend.Backend) (family.Model, error) {
	return c.BuildParts(func(string) backend.Backend { return be })
}

var _ family.PartBuilder = (*Checkpoint)(nil)

// BuildParts implements family.PartBuilder: the text encoder, the UNet
// and the VAE each on the backend parts gives for its kind.
func (c *Checkpoint) BuildParts(parts family.Parts) (family.Model, error) {
	if c.err != nil {
		return nil, c.err
	}
	m := c.m
	tok, err := tokenizer.Load(m.TokenizerDir)
	if err != nil {
		return nil, fmt.Errorf("pipeline: tokenizer: %w", err)
	}
	ccfg, err := clip.ParseConfig(m.TextEncoderConfig)
	if err != nil {
		return nil, fmt.Errorf("pipeline: text encoder config: %w", err)
	}
	cm, err := clip.New(parts("text_encoder"), ccfg, m.TextEncoder)
	if err != nil {
		return nil, fmt.Errorf("pipeline: text encoder: %w", err)
	}
	md := &Model{ckpt: c, def: c.def}
	if md.enc, err = conditioning.New(tok, cm); err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	ucfg, err := unet.ParseConfig(m.UNetConfig)
	if err != nil {
		return nil, fmt.Errorf("pipeline: unet config: %w", err)
	}
	if md.unet, err = unet.New(parts("unet"), ucfg, m.UNet); err != nil {
		return nil, fmt.Errorf("pipeline: unet: %w", err)
	}
	vcfg, err := vae.ParseConfig(m.VAEConfig)
	if err != nil {
		return nil, fmt.Errorf("pipeline: vae config: %w", err)
	}
	if md.Net, err = vae.New(codecBackend(parts("vae")), vcfg, m.VAE); err != nil {
		return nil, fmt.Errorf("pipeline: vae: %w", err)
	}
	switch ucfg.InChannels {
	case vcfg.LatentChannels:
	case 2*vcfg.LatentChannels + 1: // an inpainting UNet: latents, mask, masked-image latents
		md.def.DenoiserChannels = ucfg.InChannels
	default:
		return nil, fmt.Errorf("pipeline: unet takes %d input channels, vae makes %d latent channels (want %d, or %d for inpainting)",
			ucfg.InChannels, vcfg.LatentChannels, vcfg.LatentChannels, 2*vcfg.LatentChannels+1)
	}
	if md.enc.Dim() != ucfg.ContextDim() {
		return nil, fmt.Errorf("pipeline: text encoder width %d, unet cross-attention width %d", md.enc.Dim(), ucfg.ContextDim())
	}
	md.def.LatentChannels = vcfg.LatentChannels
	md.def.Factor = md.Net.Factor()
	md.def.ContextDim = md.enc.Dim()
	dir := ""
	if m.Layout == checkpoint.LayoutDiffusers {
		dir = m.Path
	}
	if md.def.LatentRGB, err = latentRGB(dir, vcfg.LatentChannels); err != nil {
		return nil, err
	}
	return md, nil
}

// reducedPrecision is a backend that computes in a reduced-precision
// activation dtype and can give a view of itself in another one.
type reducedPrecision interface {
	ActivationDType() tensor.DType
	WithActivationDType(tensor.DType) backend.Backend
}

// codecBackend returns the backend the VAE runs on: where activations are
// fp16, a bf16 view of the same device, because VAE activations overflow
// fp16's range; other backends as they are.
func codecBackend(be backend.Backend) backend.Backend {
	if r, ok := be.(reducedPrecision); ok && r.ActivationDType() == tensor.F16 {
		return r.WithActivationDType(tensor.BF16)
	}
	return be
}

// Model is a built SD model.
type Model struct {
	ckpt *Checkpoint
	def  family.Defaults
	enc  *conditioning.Encoder
	unet *unet.Model
	vae.Codec
}

var _ family.Model = (*Model)(nil)

var _ lora.Adaptable = (*Model)(nil)

// LoRATargets implements lora.Adaptable: the UNet and the text encoder.
func (m *Model) LoRATargets() map[string]lora.Target {
	return map[string]lora.Target{lora.UNet: m.unet, lora.TextEncoder: m.enc.Model()}
}

// EmbeddingDims implements lora.Adaptable.
func (m *Model) EmbeddingDims() map[string]int {
	return map[string]int{lora.TextEncoder: m.enc.Dim()}
}

// Defaults implements family.Model.
func (m *Model) Defaults() family.Defaults { return m.def }

// Encode implements family.Model with the one text encoder.
func (m *Model) Encode(ctx context.Context, text string, opts conditioning.Options) (conditioning.Result, error) {
	return m.enc.EncodeResult(ctx, text, opts)
}

// Extra implements family.Model: SD has no extra conditioning.
func (m *Model) Extra(in family.ExtraInput) ([]float32, []float32, error) {
	if !in.Micro.IsZero() {
		return nil, nil, fmt.Errorf("sd: this model takes no micro-conditioning (sizes, crop, aesthetic score are SDXL's)")
	}
	return nil, nil, nil
}

// Denoise implements family.Model with one UNet call (pooled and extra
// conditioning are not used by this family).
func (m *Model) Denoise(ctx context.Context, in family.DenoiseInput) ([]float32, error) {
	return m.unet.Forward(ctx, in.X, in.Shape, in.Timesteps, in.Context, in.ContextLen)
}

// Close implements family.Model.
func (m *Model) Close() error { return m.ckpt.Close() }

// defaults reads the defaults from the configs. singleFile marks configs
// inferred from a single file, whose native size is not recorded.
func defaults(unetJSON, vaeJSON, schedJSON, textJSON []byte, singleFile bool) (family.Defaults, error) {
	d := family.Defaults{Guidance: family.GuidanceCFG, SchedulerConfig: schedJSON}
	var sched []byte
	if singleFile {
		sched = schedJSON
	}
	w, h, f, err := NativeSize(unetJSON, vaeJSON, sched)
	if err != nil {
		// the size is not readable: 64 latents, as diffusers' default
		var v struct {
			BlockOutChannels []int `json:"block_out_channels"`
		}
		if json.Unmarshal(vaeJSON, &v) != nil || len(v.BlockOutChannels) < 1 || len(v.BlockOutChannels) > 8 {
			return d, fmt.Errorf("pipeline: vae config: %w", err)
		}
		f = 1 << (len(v.BlockOutChannels) - 1)
		w, h = 64*f, 64*f
	}
	d.Width, d.Height, d.Factor = w, h, f
	var v struct {
		LatentChannels int `json:"latent_channels"`
	}
	if json.Unmarshal(vaeJSON, &v) == nil && v.LatentChannels > 0 {
		d.LatentChannels = v.LatentChannels
		d.LatentRGB, _ = latentRGB("", v.LatentChannels)
	}
	var t struct {
		HiddenSize int `json:"hidden_size"`
	}
	if json.Unmarshal(textJSON, &t) == nil {
		d.ContextDim = t.HiddenSize
	}
	return d, nil
}

// NativeSize computes the native image size and VAE factor from diffusers
// UNet and VAE configs: sample_size latents × the VAE's downsampling
// factor. A scheduler config, when given, marks a single-file checkpoint
// whose sample_size is inferred rather than recorded: original
// checkpoints do not record their training size, so SD 2.x v-prediction
// ones (OpenCLIP text encoder, cross-attention width 1024) are taken as
// the 768-pixel models, all others as 512.
func NativeSize(unetJSON, vaeJSON, schedJSON []byte) (width, height, factor int, err error) {
	var u struct {
		SampleSize        json.RawMessage `json:"sample_size"`
		CrossAttentionDim json.RawMessage `json:"cross_attention_dim"`
	}
	if err := json.Unmarshal(unetJSON, &u); err != nil {
		return 0, 0, 0, fmt.Errorf("unet config: %w", err)
	}
	var v struct {
		BlockOutChannels []int `json:"block_out_channels"`
	}
	if err := json.Unmarshal(vaeJSON, &v); err != nil {
		return 0, 0, 0, fmt.Errorf("vae config: %w", err)
	}
	if len(v.BlockOutChannels) < 1 || len(v.BlockOutChannels) > 8 {
		return 0, 0, 0, fmt.Errorf("vae config: %d block_out_channels", len(v.BlockOutChannels))
	}
	factor = 1 << (len(v.BlockOutChannels) - 1)
	var side int
	var pair []int
	var h, w int
	switch {
	case json.Unmarshal(u.SampleSize, &side) == nil && side > 0:
		h, w = side, side
	case json.Unmarshal(u.SampleSize, &pair) == nil && len(pair) == 2 && pair[0] > 0 && pair[1] > 0:
		h, w = pair[0], pair[1] // diffusers' (height, width)
	default:
		return 0, 0, 0, fmt.Errorf("unet config: sample_size %s is not a size", u.SampleSize)
	}
	if schedJSON != nil {
		var s struct {
			Prediction string `json:"prediction_type"`
		}
		var cross int
		_ = json.Unmarshal(schedJSON, &s)
		_ = json.Unmarshal(u.CrossAttentionDim, &cross)
		if s.Prediction == "v_prediction" && cross == 1024 && h == 64 && w == 64 {
			h, w = 96, 96
		}
	}
	if h*factor > 1<<14 || w*factor > 1<<14 {
		return 0, 0, 0, fmt.Errorf("unet config: sample_size %s is implausibly large", u.SampleSize)
	}
	return w * factor, h * factor, factor, nil
}
