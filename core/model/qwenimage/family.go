package qwenimage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/conditioning"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/model/qwen2"
	"github.com/kiln-project/kiln/core/model/wanvae"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/sample"
	"github.com/kiln-project/kiln/core/tokenizer"
)

// Family registers Qwen-Image (diffusers QwenImagePipeline folders) with
// core/model/families. Its Model runs its own denoising loop
// (family.Generator): the flow-match sampler's shift depends on the image
// token count and true CFG mixes a prompt and a negative prompt of
// different lengths.
type Family struct{}

// Name implements family.Family.
func (Family) Name() string { return "qwen-image" }

// Claims implements family.Family: diffusers Qwen-Image text-to-image and
// image-to-image folders.
func (Family) Claims(sig family.Signature) bool {
	return sig.PipelineClass == "QwenImagePipeline" || sig.PipelineClass == "QwenImageImg2ImgPipeline"
}

// Open implements family.Family.
func (Family) Open(path string, opts family.OpenOptions) (family.Checkpoint, error) {
	switch {
	case opts.Variant != "":
		return nil, fmt.Errorf("qwenimage: weight variant %q: Qwen-Image folders are read as they are", opts.Variant)
	case opts.Prediction != "":
		return nil, fmt.Errorf("qwenimage: prediction type %q: Qwen-Image predicts flow velocity", opts.Prediction)
	case opts.TokenizerDir != "":
		return nil, errors.New("qwenimage: a separate tokenizer folder applies to single files; Qwen-Image is a diffusers folder")
	}
	return OpenCheckpoint(path)
}

// Inspect implements family.Family: the configs alone, no weights.
func (Family) Inspect(path string) (family.Defaults, error) {
	c, err := readConfigs(path)
	if err != nil {
		return family.Defaults{}, err
	}
	return c.defaults(), nil
}

// Checkpoint is an opened Qwen-Image folder: configs, tokenizer and
// memory-mapped weights, no network built yet.
type Checkpoint struct {
	tok                    *tokenizer.Qwen2
	textCfg                qwen2.Config
	trCfg                  TransformerConfig
	vaeCfg                 wanvae.Config
	sched                  sample.FlowMatchConfig
	schedJSON              []byte
	text, transformer, vae safetensors.Source
	closers                []interface{ Close() error }
}

// readConfigs reads and cross-checks the folder's configs.
func readConfigs(dir string) (*Checkpoint, error) {
	read := func(parts ...string) ([]byte, error) {
		data, err := os.ReadFile(filepath.Join(append([]string{dir}, parts...)...))
		if err != nil {
			return nil, fmt.Errorf("qwenimage: %w", err)
		}
		return data, nil
	}
	c := &Checkpoint{}
	data, err := read("text_encoder", "config.json")
	if err != nil {
		return nil, err
	}
	if c.textCfg, err = qwen2.ParseConfig(data); err != nil {
		return nil, err
	}
	if data, err = read("transformer", "config.json"); err != nil {
		return nil, err
	}
	if c.trCfg, err = ParseTransformerConfig(data); err != nil {
		return nil, err
	}
	if c.trCfg.JointAttentionDim != c.textCfg.HiddenSize {
		return nil, fmt.Errorf("qwenimage: transformer joint_attention_dim %d differs from the text encoder's hidden_size %d", c.trCfg.JointAttentionDim, c.textCfg.HiddenSize)
	}
	if data, err = read("vae", "config.json"); err != nil {
		return nil, err
	}
	if c.vaeCfg, err = wanvae.ParseConfig(data); err != nil {
		return nil, err
	}
	if c.vaeCfg.ZDim*c.trCfg.PatchSize*c.trCfg.PatchSize != c.trCfg.InChannels {
		return nil, fmt.Errorf("qwenimage: transformer in_channels %d is not the VAE's z_dim %d × patch²", c.trCfg.InChannels, c.vaeCfg.ZDim)
	}
	if c.trCfg.OutChannels != c.vaeCfg.ZDim {
		return nil, fmt.Errorf("qwenimage: transformer out_channels %d differs from the VAE's z_dim %d", c.trCfg.OutChannels, c.vaeCfg.ZDim)
	}
	if c.schedJSON, err = read("scheduler", "scheduler_config.json"); err != nil {
		return nil, err
	}
	if c.sched, err = sample.ParseFlowMatchConfig(c.schedJSON); err != nil {
		return nil, err
	}
	return c, nil
}

// OpenCheckpoint opens a diffusers Qwen-Image folder (model_index.json,
// tokenizer/, text_encoder/, transformer/, vae/, scheduler/; weights
// single or sharded with an index).
func OpenCheckpoint(dir string) (_ *Checkpoint, err error) {
	c, err := readConfigs(dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if c.tok, err = tokenizer.LoadQwen2(filepath.Join(dir, "tokenizer")); err != nil {
		return nil, err
	}
	if c.text, err = c.open(filepath.Join(dir, "text_encoder"), "model"); err != nil {
		return nil, err
	}
	if c.transformer, err = c.open(filepath.Join(dir, "transformer"), "diffusion_pytorch_model"); err != nil {
		return nil, err
	}
	if c.vae, err = c.open(filepath.Join(dir, "vae"), "diffusion_pytorch_model"); err != nil {
		return nil, err
	}
	return c, nil
}

// open opens base.safetensors or the sharded base.safetensors.index.json
// in dir.
func (c *Checkpoint) open(dir, base string) (safetensors.Source, error) {
	idx := filepath.Join(dir, base+".safetensors.index.json")
	if _, err := os.Stat(idx); err == nil {
		s, err := safetensors.OpenIndex(idx)
		if err != nil {
			return nil, fmt.Errorf("qwenimage: %w", err)
		}
		c.closers = append(c.closers, s)
		return s, nil
	}
	f, err := safetensors.Open(filepath.Join(dir, base+".safetensors"))
	if err != nil {
		return nil, fmt.Errorf("qwenimage: %w", err)
	}
	c.closers = append(c.closers, f)
	return f, nil
}

// defaults are the family's defaults for this model: native 1328², the
// VAE's factor and channels, the text width, true CFG 4 over 50 steps.
func (c *Checkpoint) defaults() family.Defaults {
	return family.Defaults{
		Width: NativeSize, Height: NativeSize, Factor: c.vaeCfg.Factor(), LatentChannels: c.vaeCfg.ZDim,
		ContextDim: c.textCfg.HiddenSize, Guidance: family.GuidanceTrueCFG, SchedulerConfig: c.schedJSON,
		Steps: DefaultSteps, GuidanceScale: DefaultCFG, Sampler: Sampler,
	}
}

// Defaults implements family.Checkpoint.
func (c *Checkpoint) Defaults() family.Defaults { return c.defaults() }

// Components implements family.Checkpoint.
func (c *Checkpoint) Components() []family.Component {
	return []family.Component{
		{Kind: "text_encoder", Weights: c.text, TextEncoder: true},
		{Kind: "transformer", Weights: c.transformer},
		{Kind: "vae", Weights: c.vae, Codec: true},
	}
}

// Close implements family.Checkpoint.
func (c *Checkpoint) Close() error {
	var first error
	for _, cl := range c.closers {
		if err := cl.Close(); err != nil && first == nil {
			first = err
		}
	}
	c.closers = nil
	return first
}

// Build implements family.Checkpoint.
func (c *Checkpoint) Build(be backend.Backend) (family.Model, error) {
	p, err := c.pipeline(be)
	if err != nil {
		return nil, err
	}
	return &Model{p: p, def: c.defaults()}, nil
}

// Model is a built Qwen-Image model behind the family seam.
type Model struct {
	p   *Pipeline
	def family.Defaults
}

// Pipeline returns the model's reference pipeline.
func (m *Model) Pipeline() *Pipeline { return m.p }

// Defaults implements family.Model.
func (m *Model) Defaults() family.Defaults { return m.def }

// Encode implements family.Model: the templated prompt's hidden states
// (1, its own length, hidden size). Qwen-Image has no pooled output, clip
// skip or adapters; prompts are taken literally (no emphasis syntax).
func (m *Model) Encode(ctx context.Context, text string, opts conditioning.Options) (conditioning.Result, error) {
	if opts.ClipSkip > 1 || opts.Text2 != "" || len(opts.Adapters) > 0 || len(opts.Embeddings) > 0 {
		return conditioning.Result{}, errors.New("qwenimage: clip skip, second-encoder prompts, LoRAs and embeddings are not supported")
	}
	hs, err := m.p.Text.Encode(ctx, []string{text})
	if err != nil {
		return conditioning.Result{}, err
	}
	d := m.def.ContextDim
	return conditioning.Result{Hidden: hs[0], Length: len(hs[0]) / d, Dim: d}, nil
}

// Extra implements family.Model: Qwen-Image has no micro-conditioning.
func (m *Model) Extra(in family.ExtraInput) ([]float32, []float32, error) {
	if !in.Micro.IsZero() {
		return nil, nil, errors.New("qwenimage: micro-conditioning is SDXL's; Qwen-Image does not take it")
	}
	return nil, nil, nil
}

// Denoise implements family.Model: one transformer call over (rows, z,
// h, w) latents with the rows' timesteps (0..1000) and a shared context
// length; the velocity comes back unpacked.
func (m *Model) Denoise(ctx context.Context, in family.DenoiseInput) ([]float32, error) {
	ps := m.p.Transformer.Config().PatchSize
	b, ch, h, w := in.Shape[0], in.Shape[1], in.Shape[2], in.Shape[3]
	if h%ps != 0 || w%ps != 0 || len(in.X) != b*ch*h*w || len(in.Timesteps) != b {
		return nil, fmt.Errorf("qwenimage: denoise input %v with %d values and %d timesteps", in.Shape, len(in.X), len(in.Timesteps))
	}
	ts := make([]float32, b)
	for i, t := range in.Timesteps {
		ts[i] = t / 1000
	}
	out, err := m.p.Transformer.Forward(ctx, TransformerInput{X: Pack(in.X, b, ch, h, w, ps), H: h / ps, W: w / ps,
		Context: in.Context, T: in.ContextLen, Timesteps: ts})
	if err != nil {
		return nil, err
	}
	return Unpack(out, b, ch, h, w, ps), nil
}

// Generate implements family.Generator: QwenImagePipeline's loop for one
// image. With guidance above 1 the negative prompt runs as true CFG; an
// empty one is encoded as " ", as the model card does.
func (m *Model) Generate(ctx context.Context, in family.GenerateInput) ([]float32, error) {
	if err := m.p.checkSize(in.Width, in.Height); err != nil {
		return nil, err
	}
	prompts := []string{in.Prompt}
	if in.Guidance > 1 {
		neg := in.NegativePrompt
		if neg == "" {
			neg = " "
		}
		prompts = append(prompts, neg)
	}
	embeds, err := m.p.Text.Encode(ctx, prompts)
	if err != nil {
		return nil, err
	}
	lr := loop{cond: embeds[0], width: in.Width, height: in.Height, steps: in.Steps, noise: in.Noise, init: in.Init,
		strength: in.Strength, onStep: in.OnStep}
	if in.Guidance > 1 {
		lr.uncond, lr.scale = embeds[1], in.Guidance
	}
	if in.Init == nil {
		lr.strength = 1
	}
	packed, err := m.p.denoise(ctx, lr)
	if err != nil {
		return nil, err
	}
	f, ps := m.p.VAE.Config().Factor(), m.p.Transformer.Config().PatchSize
	return Unpack(packed, 1, m.def.LatentChannels, in.Height/f, in.Width/f, ps), nil
}

// EncodeImage implements family.Model.
func (m *Model) EncodeImage(ctx context.Context, pixels []float32, shape [4]int) ([]float32, []float32, [4]int, error) {
	return m.p.VAE.Encode(ctx, pixels, shape)
}

// DecodeLatents implements family.Model (pixels clamped to [-1, 1]).
func (m *Model) DecodeLatents(ctx context.Context, latents []float32, shape [4]int) ([]float32, [4]int, error) {
	return m.p.VAE.Decode(ctx, latents, shape, true)
}

// ToDenoiser implements family.Model: the VAE's per-channel mean/std
// normalisation.
func (m *Model) ToDenoiser(latents []float32, shape [4]int) error {
	if err := m.checkLatents(latents, shape); err != nil {
		return err
	}
	m.p.VAE.Config().Normalize(latents, shape)
	return nil
}

// FromDenoiser implements family.Model.
func (m *Model) FromDenoiser(latents []float32, shape [4]int) error {
	if err := m.checkLatents(latents, shape); err != nil {
		return err
	}
	m.p.VAE.Config().Denormalize(latents, shape)
	return nil
}

func (m *Model) checkLatents(latents []float32, shape [4]int) error {
	if shape[1] != m.def.LatentChannels || len(latents) != shape[0]*shape[1]*shape[2]*shape[3] {
		return fmt.Errorf("qwenimage: latents %v with %d values, want %d channels", shape, len(latents), m.def.LatentChannels)
	}
	return nil
}

// Close implements family.Model.
func (m *Model) Close() error { return m.p.Close() }
