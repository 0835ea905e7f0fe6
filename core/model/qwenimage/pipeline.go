package qwenimage

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/model/qwen2"
	"github.com/kiln-project/kiln/core/model/wanvae"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/sample"
	"github.com/kiln-project/kiln/core/tokenizer"
)

// Pipeline is a loaded Qwen-Image model: text encoder, transformer, VAE
// and scheduler config, run as diffusers' QwenImagePipeline and
// QwenImageImg2ImgPipeline do.
type Pipeline struct {
	Text        *TextEncoder
	Transformer *Transformer
	VAE         *wanvae.Model
	Scheduler   sample.FlowMatchConfig
	closers     []interface{ Close() error }
}

// Load opens a diffusers Qwen-Image folder (model_index.json, tokenizer/,
// text_encoder/, transformer/, vae/, scheduler/; weights single or
// sharded with an index) and builds it on be.
func Load(be backend.Backend, dir string) (_ *Pipeline, err error) {
	p := &Pipeline{}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	read := func(parts ...string) ([]byte, error) {
		return os.ReadFile(filepath.Join(append([]string{dir}, parts...)...))
	}
	tok, err := tokenizer.LoadQwen2(filepath.Join(dir, "tokenizer"))
	if err != nil {
		return nil, err
	}
	data, err := read("text_encoder", "config.json")
	if err != nil {
		return nil, fmt.Errorf("qwenimage: %w", err)
	}
	tcfg, err := qwen2.ParseConfig(data)
	if err != nil {
		return nil, err
	}
	src, err := p.open(filepath.Join(dir, "text_encoder"), "model")
	if err != nil {
		return nil, err
	}
	lm, err := qwen2.LanguageModel(src)
	if err != nil {
		return nil, err
	}
	te, err := qwen2.New(be, tcfg, lm)
	if err != nil {
		return nil, err
	}
	p.Text = &TextEncoder{Tok: tok, Model: te}
	if data, err = read("transformer", "config.json"); err != nil {
		return nil, fmt.Errorf("qwenimage: %w", err)
	}
	trc, err := ParseTransformerConfig(data)
	if err != nil {
		return nil, err
	}
	if trc.JointAttentionDim != tcfg.HiddenSize {
		return nil, fmt.Errorf("qwenimage: transformer joint_attention_dim %d differs from the text encoder's hidden_size %d", trc.JointAttentionDim, tcfg.HiddenSize)
	}
	if src, err = p.open(filepath.Join(dir, "transformer"), "diffusion_pytorch_model"); err != nil {
		return nil, err
	}
	if p.Transformer, err = NewTransformer(be, trc, src); err != nil {
		return nil, err
	}
	if data, err = read("vae", "config.json"); err != nil {
		return nil, fmt.Errorf("qwenimage: %w", err)
	}
	vc, err := wanvae.ParseConfig(data)
	if err != nil {
		return nil, err
	}
	if vc.ZDim*trc.PatchSize*trc.PatchSize != trc.InChannels {
		return nil, fmt.Errorf("qwenimage: transformer in_channels %d is not the VAE's z_dim %d × patch²", trc.InChannels, vc.ZDim)
	}
	if src, err = p.open(filepath.Join(dir, "vae"), "diffusion_pytorch_model"); err != nil {
		return nil, err
	}
	if p.VAE, err = wanvae.New(be, vc, src); err != nil {
		return nil, err
	}
	if data, err = read("scheduler", "scheduler_config.json"); err != nil {
		return nil, fmt.Errorf("qwenimage: %w", err)
	}
	if p.Scheduler, err = sample.ParseFlowMatchConfig(data); err != nil {
		return nil, err
	}
	return p, nil
}

// open opens base.safetensors or the sharded base.safetensors.index.json
// in dir.
func (p *Pipeline) open(dir, base string) (safetensors.Source, error) {
	idx := filepath.Join(dir, base+".safetensors.index.json")
	if _, err := os.Stat(idx); err == nil {
		s, err := safetensors.OpenIndex(idx)
		if err != nil {
			return nil, fmt.Errorf("qwenimage: %w", err)
		}
		p.closers = append(p.closers, s)
		return s, nil
	}
	f, err := safetensors.Open(filepath.Join(dir, base+".safetensors"))
	if err != nil {
		return nil, fmt.Errorf("qwenimage: %w", err)
	}
	p.closers = append(p.closers, f)
	return f, nil
}

// Close releases the weight files.
func (p *Pipeline) Close() error {
	var first error
	for _, c := range p.closers {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	p.closers = nil
	return first
}

// Request is one generation. Noise is the (1, z, H/8, W/8) unit noise the
// pipeline draws with randn_tensor (its caller owns the RNG); for img2img
// Image holds (1, 3, H, W) pixels in [-1, 1] and PosteriorNoise the unit
// noise of the VAE posterior sample.
type Request struct {
	Prompt, Negative string
	// CFG is true_cfg_scale: guidance runs when it is above 1 and a
	// negative prompt is given (even an empty one, with HasNegative).
	CFG            float64
	HasNegative    bool
	Width, Height  int
	Steps          int
	Noise          []float32
	Image          []float32
	PosteriorNoise []float32
	Strength       float64
}

// Generate runs the denoising loop and returns the packed latents (tokens
// × z·patch²) in the transformer's scale, as output_type="latent" gives.
func (p *Pipeline) Generate(ctx context.Context, r Request) ([]float32, error) {
	tc := p.Transformer.Config()
	f := p.VAE.Config().Factor()
	z, ps := p.VAE.Config().ZDim, tc.PatchSize
	if r.Width%(f*ps) != 0 || r.Height%(f*ps) != 0 || r.Width < 1 || r.Height < 1 {
		return nil, fmt.Errorf("qwenimage: %d×%d: sides must be multiples of %d", r.Width, r.Height, f*ps)
	}
	lh, lw := r.Height/f, r.Width/f
	if len(r.Noise) != z*lh*lw {
		return nil, fmt.Errorf("qwenimage: noise holds %d values, want %d", len(r.Noise), z*lh*lw)
	}
	gh, gw := lh/ps, lw/ps
	cfg := r.CFG > 1 && r.HasNegative
	prompts := []string{r.Prompt}
	if cfg {
		prompts = append(prompts, r.Negative)
	}
	embeds, err := p.Text.Encode(ctx, prompts)
	if err != nil {
		return nil, err
	}
	s, err := sample.NewFlowMatchEuler(p.Scheduler, r.Steps, gh*gw)
	if err != nil {
		return nil, err
	}
	start := 0
	x := Pack(r.Noise, 1, z, lh, lw, ps)
	if r.Image != nil {
		if r.Strength < 0 || r.Strength > 1 {
			return nil, fmt.Errorf("qwenimage: strength %v outside [0, 1]", r.Strength)
		}
		start = int(max(float64(r.Steps)-min(float64(r.Steps)*r.Strength, float64(r.Steps)), 0))
		if start >= r.Steps {
			return nil, fmt.Errorf("qwenimage: strength %v leaves no step of %d", r.Strength, r.Steps)
		}
		mean, logvar, ls, err := p.VAE.Encode(ctx, r.Image, [4]int{1, 3, r.Height, r.Width})
		if err != nil {
			return nil, err
		}
		if len(r.PosteriorNoise) != len(mean) {
			return nil, fmt.Errorf("qwenimage: posterior noise holds %d values, want %d", len(r.PosteriorNoise), len(mean))
		}
		for i := range mean {
			mean[i] += float32(expHalf(logvar[i])) * r.PosteriorNoise[i]
		}
		p.VAE.Config().Normalize(mean, ls)
		x = Pack(s.AddNoise(mean, r.Noise, start), 1, z, lh, lw, ps)
	}
	d := tc.JointAttentionDim
	run := func(e []float32, x []float32, t float32) ([]float32, error) {
		return p.Transformer.Forward(ctx, TransformerInput{X: x, H: gh, W: gw, Context: e, T: len(e) / d, Timesteps: []float32{t}})
	}
	for i := start; i < r.Steps; i++ {
		t := float32(s.Timesteps()[i]) / 1000
		v, err := run(embeds[0], x, t)
		if err != nil {
			return nil, err
		}
		if cfg {
			u, err := run(embeds[1], x, t)
			if err != nil {
				return nil, err
			}
			if err := sample.TrueCFG(v, u, r.CFG, tc.OutChannels*ps*ps); err != nil {
				return nil, err
			}
		}
		if x, _, err = s.Step(i, v, x, nil); err != nil {
			return nil, err
		}
	}
	return x, nil
}

// Decode turns packed latents into (1, 3, H, W) pixels in [-1, 1].
func (p *Pipeline) Decode(ctx context.Context, packed []float32, width, height int) ([]float32, error) {
	f, z, ps := p.VAE.Config().Factor(), p.VAE.Config().ZDim, p.Transformer.Config().PatchSize
	lh, lw := height/f, width/f
	if len(packed) != z*lh*lw {
		return nil, fmt.Errorf("qwenimage: latents hold %d values, want %d", len(packed), z*lh*lw)
	}
	x := Unpack(packed, 1, z, lh, lw, ps)
	shape := [4]int{1, z, lh, lw}
	p.VAE.Config().Denormalize(x, shape)
	px, _, err := p.VAE.Decode(ctx, x, shape, true)
	return px, err
}

func expHalf(v float32) float64 { return math.Exp(0.5 * float64(v)) }
