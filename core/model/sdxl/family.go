package sdxl

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
	"github.com/kiln-project/kiln/core/model/vae"
	"github.com/kiln-project/kiln/core/tensor"
)

// pipelineClasses are the diffusers pipeline classes of the family.
var pipelineClasses = map[string]bool{"StableDiffusionXLPipeline": true, "StableDiffusionXLImg2ImgPipeline": true,
	"StableDiffusionXLInpaintPipeline": true}

// LatentRGB maps SDXL latents to RGB for previews (the factors and bias
// ComfyUI uses for SDXL's VAE).
var LatentRGB = family.LatentRGB{Factors: [][3]float64{
	{0.3651, 0.4232, 0.4341},
	{-0.2533, -0.0042, 0.1068},
	{0.1076, 0.1111, -0.0362},
	{-0.3165, -0.2492, -0.2188},
}, Bias: [3]float64{0.1084, -0.0175, -0.0011}}

// Family is the SDXL family, base and refiner, for core/pipeline.
type Family struct{}

var _ family.Family = Family{}

// Name implements family.Family.
func (Family) Name() string { return checkpoint.FamilySDXL }

// Claims implements family.Family: the SDXL pipeline classes, and single
// files with SDXL's conditioner or its UNet's added embedding (the loader
// then names what is missing).
func (Family) Claims(sig family.Signature) bool {
	if sig.PipelineClass != "" {
		return pipelineClasses[sig.PipelineClass]
	}
	return sig.HasPrefix(checkpoint.PrefixSDXLEmbedders) || sig.HasPrefix(checkpoint.PrefixUNet+"label_emb.0.0.")
}

// Open implements family.Family.
func (Family) Open(path string, opts family.OpenOptions) (family.Checkpoint, error) {
	m, err := checkpoint.Load(path, checkpoint.Options{TokenizerDir: opts.TokenizerDir, Variant: opts.Variant, Prediction: opts.Prediction})
	if err != nil {
		return nil, err
	}
	c, err := FromCheckpoint(m)
	if err != nil {
		m.Close()
		return nil, err
	}
	return c, nil
}

// Inspect implements family.Family: a folder's defaults come from its
// configs, a single file is opened (its configs are inferred).
func (f Family) Inspect(path string) (family.Defaults, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		var js [4][]byte
		for i, rel := range []string{"unet/config.json", "vae/config.json", "scheduler/scheduler_config.json", "text_encoder_2/config.json"} {
			if js[i], err = os.ReadFile(filepath.Join(path, rel)); err != nil {
				return family.Defaults{}, fmt.Errorf("sdxl: %w", err)
			}
		}
		text1, _ := os.ReadFile(filepath.Join(path, "text_encoder/config.json")) // absent in a refiner
		return defaults(js[0], js[1], js[2], text1, js[3])
	}
	cp, err := f.Open(path, family.OpenOptions{})
	if err != nil {
		return family.Defaults{}, err
	}
	defer cp.Close()
	return cp.Defaults(), nil
}

// defaults reads a model's defaults from its configs: the native size is
// the UNet's sample_size in latents times the VAE's factor.
func defaults(unetJSON, vaeJSON, schedJSON, text1JSON, text2JSON []byte) (family.Defaults, error) {
	d := family.Defaults{Guidance: family.GuidanceCFG, SchedulerConfig: schedJSON}
	var u struct {
		SampleSize int `json:"sample_size"`
		InChannels int `json:"in_channels"`
	}
	if err := json.Unmarshal(unetJSON, &u); err != nil || u.SampleSize < 1 || u.SampleSize > 1024 {
		return d, fmt.Errorf("sdxl: unet config: sample_size must be a positive size")
	}
	vcfg, err := vae.ParseConfig(vaeJSON)
	if err != nil {
		return d, fmt.Errorf("sdxl: %w", err)
	}
	d.Factor, d.LatentChannels = vcfg.Factor(), vcfg.LatentChannels
	d.Width, d.Height = u.SampleSize*d.Factor, u.SampleSize*d.Factor
	if u.InChannels == 2*d.LatentChannels+1 { // an inpainting UNet: latents, mask, masked-image latents
		d.DenoiserChannels = u.InChannels
	}
	if d.LatentChannels == 4 {
		m := LatentRGB
		d.LatentRGB = &m
	}
	for _, js := range [][]byte{text1JSON, text2JSON} {
		var t struct {
			Hidden int `json:"hidden_size"`
		}
		if len(js) > 0 && json.Unmarshal(js, &t) == nil {
			d.ContextDim += t.Hidden
		}
	}
	return d, nil
}

// Checkpoint is an opened SDXL checkpoint.
type Checkpoint struct {
	m   *checkpoint.Model
	def family.Defaults
}

var _ family.Checkpoint = (*Checkpoint)(nil)

// Wraps reports whether m is an SDXL checkpoint (for core/model/families).
func (Family) Wraps(m *checkpoint.Model) bool { return m.Family == checkpoint.FamilySDXL }

// FromModel wraps a checkpoint built in memory (for core/model/families).
func (Family) FromModel(m *checkpoint.Model) (family.Checkpoint, error) { return FromCheckpoint(m) }

// FromCheckpoint wraps a loaded SDXL checkpoint (a synthetic one built in
// memory, for example); the result owns m.
func FromCheckpoint(m *checkpoint.Model) (*Checkpoint, error) {
	if m.Family != checkpoint.FamilySDXL {
		return nil, fmt.Errorf("sdxl: the checkpoint holds a %q model", m.Family)
	}
	d, err := defaults(m.UNetConfig, m.VAEConfig, m.SchedulerConfig, m.TextEncoderConfig, m.TextEncoder2Config)
	if err != nil {
		return nil, err
	}
	d.ZeroEmptyNegative = m.ForceZerosForEmptyPrompt
	return &Checkpoint{m: m, def: d}, nil
}

// Defaults implements family.Checkpoint.
func (c *Checkpoint) Defaults() family.Defaults { return c.def }

// Components implements family.Checkpoint: both text encoders (the
// second alone for a refiner), the UNet and the VAE.
func (c *Checkpoint) Components() []family.Component {
	var out []family.Component
	if c.m.TextEncoder != nil {
		out = append(out, family.Component{Kind: "text_encoder", Weights: c.m.TextEncoder, TextEncoder: true})
	}
	return append(out,
		family.Component{Kind: "text_encoder_2", Weights: c.m.TextEncoder2, TextEncoder: true},
		family.Component{Kind: "unet", Weights: c.m.UNet},
		family.Component{Kind: "vae", Weights: c.m.VAE, Codec: true})
}

// Close implements family.Checkpoint.
func (c *Checkpoint) Close() error { return c.m.Close() }

// Build implements family.Checkpoint.
func (c *Checkpoint) Build(be backend.Backend) (family.Model, error) {
	vcfg, err := vae.ParseConfig(c.m.VAEConfig)
	if err != nil {
		return nil, fmt.Errorf("sdxl: %w", err)
	}
	m, err := New(be, codecBackend(be, vcfg), c.m)
	if err != nil {
		return nil, err
	}
	return &Built{Model: m, Codec: vae.Codec{Net: m.VAE}, ckpt: c, def: c.def}, nil
}

// reducedPrecision is a backend that computes in a reduced-precision
// activation dtype and can give a view of itself in another one.
type reducedPrecision interface {
	ActivationDType() tensor.DType
	WithActivationDType(tensor.DType) backend.Backend
}

// codecBackend returns the backend the VAE runs on. SDXL's own VAE
// overflows fp16 (force_upcast), so where activations are fp16 it gets a
// bf16 view of the device; a VAE that declares itself fp16-safe
// (force_upcast false, as the fp16-fix VAE does) runs as it is.
func codecBackend(be backend.Backend, vcfg vae.Config) backend.Backend {
	if r, ok := be.(reducedPrecision); ok && vcfg.ForceUpcast && r.ActivationDType() == tensor.F16 {
		return r.WithActivationDType(tensor.BF16)
	}
	return be
}

// Built is a built SDXL model behind family.Model.
type Built struct {
	*Model
	vae.Codec
	ckpt *Checkpoint
	def  family.Defaults
}

var _ family.Model = (*Built)(nil)

// Defaults implements family.Model.
func (b *Built) Defaults() family.Defaults { return b.def }

// Encode implements family.Model: both encoders' hidden states side by
// side and the second's projected pooled output (a refiner: the second
// encoder's alone). opts.Text2 goes to the second encoder (diffusers'
// prompt_2); a refiner, as in diffusers, encodes text.
func (b *Built) Encode(ctx context.Context, text string, opts conditioning.Options) (conditioning.Result, error) {
	c, err := b.EncodePrompts(ctx, text, opts.Text2, opts)
	if err != nil {
		return conditioning.Result{}, err
	}
	return conditioning.Result{Hidden: c.Hidden, Length: c.Length, Dim: c.Dim, Chunks: c.Chunks, Pooled: c.Pooled}, nil
}

// Extra implements family.Model: the micro-conditioning time ids of the
// conditional and unconditional rows.
func (b *Built) Extra(in family.ExtraInput) (cond, uncond []float32, err error) {
	if err := ValidateMicro(in.Micro); err != nil {
		return nil, nil, err
	}
	cond, uncond = b.TimeIDs(in.Micro, in.Height, in.Width, in.Img2Img)
	return cond, uncond, nil
}

// Denoise implements family.Model: one UNet call with the rows' pooled
// text embeddings and time ids.
func (b *Built) Denoise(ctx context.Context, in family.DenoiseInput) ([]float32, error) {
	return b.Predict(ctx, in.X, in.Shape, in.Timesteps, &Rows{Context: in.Context, CtxLen: in.ContextLen, Pooled: in.Pooled, TimeIDs: in.Extra})
}

// Close implements family.Model.
func (b *Built) Close() error { return b.ckpt.Close() }
