package qwenimage

import (
	"context"
	"fmt"
	"math"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/model/qwen2"
	"github.com/kiln-project/kiln/core/model/wanvae"
	"github.com/kiln-project/kiln/core/sample"
)

// Pipeline is a loaded Qwen-Image model: text encoder, transformer, VAE
// and scheduler config, run as diffusers' QwenImagePipeline and
// QwenImageImg2ImgPipeline do.
type Pipeline struct {
	Text        *TextEncoder
	Transformer *Transformer
	VAE         *wanvae.Model
	Scheduler   sample.FlowMatchConfig
	ckpt        *Checkpoint
}

// Load opens a diffusers Qwen-Image folder (model_index.json, tokenizer/,
// text_encoder/, transformer/, vae/, scheduler/; weights single or
// sharded with an index) and builds it on be.
func Load(be backend.Backend, dir string) (*Pipeline, error) {
	c, err := OpenCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	p, err := c.pipeline(be)
	if err != nil {
		c.Close()
		return nil, err
	}
	return p, nil
}

// pipeline builds the networks on be; the pipeline owns c from then on.
func (c *Checkpoint) pipeline(be backend.Backend) (*Pipeline, error) {
	lm, err := qwen2.LanguageModel(c.text)
	if err != nil {
		return nil, err
	}
	te, err := qwen2.New(be, c.textCfg, lm)
	if err != nil {
		return nil, err
	}
	p := &Pipeline{Text: &TextEncoder{Tok: c.tok, Model: te}, Scheduler: c.sched, ckpt: c}
	if p.Transformer, err = NewTransformer(be, c.trCfg, c.transformer); err != nil {
		return nil, err
	}
	if p.VAE, err = wanvae.New(be, c.vaeCfg, c.vae); err != nil {
		return nil, err
	}
	return p, nil
}

// Close releases the weight files.
func (p *Pipeline) Close() error {
	if p.ckpt == nil {
		return nil
	}
	err := p.ckpt.Close()
	p.ckpt = nil
	return err
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
	cfg := r.CFG > 1 && r.HasNegative
	prompts := []string{r.Prompt}
	if cfg {
		prompts = append(prompts, r.Negative)
	}
	if err := p.checkSize(r.Width, r.Height); err != nil {
		return nil, err
	}
	embeds, err := p.Text.Encode(ctx, prompts)
	if err != nil {
		return nil, err
	}
	lr := loop{cond: embeds[0], width: r.Width, height: r.Height, steps: r.Steps, noise: r.Noise, strength: 1}
	if cfg {
		lr.uncond, lr.scale = embeds[1], r.CFG
	}
	if r.Image != nil {
		if r.Strength < 0 || r.Strength > 1 {
			return nil, fmt.Errorf("qwenimage: strength %v outside [0, 1]", r.Strength)
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
		lr.init, lr.strength = mean, r.Strength
	}
	return p.denoise(ctx, lr)
}

// checkSize refuses image sides the VAE factor times the patch does not
// divide.
func (p *Pipeline) checkSize(width, height int) error {
	m := p.VAE.Config().Factor() * p.Transformer.Config().PatchSize
	if width%m != 0 || height%m != 0 || width < 1 || height < 1 {
		return fmt.Errorf("qwenimage: %d×%d: sides must be multiples of %d", width, height, m)
	}
	return nil
}

// loop is one image's denoising run.
type loop struct {
	// cond and uncond are the prompt's and the negative prompt's hidden
	// states (length × hidden size each, lengths may differ); uncond is
	// used when scale > 1 (true CFG).
	cond, uncond []float32
	scale        float64
	width        int
	height       int
	steps        int
	// noise is the (1, z, H/f, W/f) unit noise; init, for img2img, the
	// clean latents in the transformer's scale (same shape), noised to
	// the schedule's step (1 − strength)·steps.
	noise, init []float32
	strength    float64
	// onStep, when not nil, is called after every step.
	onStep func(step, steps int, timestep float64) error
}

// denoise runs the flow-match Euler loop of QwenImagePipeline (and of its
// img2img variant from an init latent) and returns the packed latents.
func (p *Pipeline) denoise(ctx context.Context, r loop) ([]float32, error) {
	tc := p.Transformer.Config()
	f := p.VAE.Config().Factor()
	z, ps := p.VAE.Config().ZDim, tc.PatchSize
	if err := p.checkSize(r.width, r.height); err != nil {
		return nil, err
	}
	lh, lw := r.height/f, r.width/f
	if len(r.noise) != z*lh*lw {
		return nil, fmt.Errorf("qwenimage: noise holds %d values, want %d", len(r.noise), z*lh*lw)
	}
	gh, gw := lh/ps, lw/ps
	s, err := sample.NewFlowMatchEuler(p.Scheduler, r.steps, gh*gw)
	if err != nil {
		return nil, err
	}
	start := 0
	x := Pack(r.noise, 1, z, lh, lw, ps)
	if r.init != nil {
		if len(r.init) != len(r.noise) {
			return nil, fmt.Errorf("qwenimage: init latents hold %d values, want %d", len(r.init), len(r.noise))
		}
		start = int(max(float64(r.steps)-min(float64(r.steps)*r.strength, float64(r.steps)), 0))
		if start >= r.steps {
			return nil, fmt.Errorf("qwenimage: strength %v leaves no step of %d", r.strength, r.steps)
		}
		x = Pack(s.AddNoise(r.init, r.noise, start), 1, z, lh, lw, ps)
	}
	d := tc.JointAttentionDim
	run := func(e []float32, x []float32, t float32) ([]float32, error) {
		return p.Transformer.Forward(ctx, TransformerInput{X: x, H: gh, W: gw, Context: e, T: len(e) / d, Timesteps: []float32{t}})
	}
	for i := start; i < r.steps; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t := float32(s.Timesteps()[i]) / 1000
		v, err := run(r.cond, x, t)
		if err != nil {
			return nil, err
		}
		if r.scale > 1 {
			u, err := run(r.uncond, x, t)
			if err != nil {
				return nil, err
			}
			if err := sample.TrueCFG(v, u, r.scale, tc.OutChannels*ps*ps); err != nil {
				return nil, err
			}
		}
		if x, _, err = s.Step(i, v, x, nil); err != nil {
			return nil, err
		}
		if r.onStep != nil {
			if err := r.onStep(i-start+1, r.steps-start, s.Timesteps()[i]); err != nil {
				return nil, err
			}
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
