package vae

import (
	"fmt"

	"github.com/kiln-project/kiln/core/model/nn"
)

// Block type names as diffusers spells them.
const (
	DownEncoderBlock2D = "DownEncoderBlock2D"
	UpDecoderBlock2D   = "UpDecoderBlock2D"
)

// Config is the architecture and latent convention of an AutoencoderKL,
// read from vae/config.json.
type Config struct {
	InChannels     int
	OutChannels    int
	LatentChannels int
	// BlockOutChannels holds the width of each resolution level; the
	// downsampling factor is 2^(levels-1).
	BlockOutChannels []int
	DownBlockTypes   []string
	UpBlockTypes     []string
	// LayersPerBlock is the ResNets per encoder block (decoder blocks have
	// one more).
	LayersPerBlock int
	NormGroups     int
	// MidBlockAttention is mid_block_add_attention: whether the mid blocks
	// hold their single-head self-attention.
	MidBlockAttention bool
	UseQuantConv      bool
	UsePostQuantConv  bool

	// ScalingFactor and ShiftFactor map posterior samples to the latents the
	// UNet sees: z = (x − shift) · scale. ShiftFactor is 0 when the config
	// has none (shift_factor null, as in SD 1.x/2.x).
	ScalingFactor float64
	ShiftFactor   float64
	// LatentsMean and LatentsStd, when set (both or neither, one value per
	// latent channel), replace the shift: z = (x − mean_c) · scale / std_c.
	LatentsMean, LatentsStd []float64
	// ForceUpcast is diffusers' force_upcast: the VAE must run in float32
	// even when the rest of the model runs in half precision (it overflows
	// in fp16). Backends with reduced-precision weights honour it; the CPU
	// backend is float32 anyway.
	ForceUpcast bool
}

// Factor returns the spatial downsampling factor between image and latent.
func (c *Config) Factor() int { return 1 << (len(c.BlockOutChannels) - 1) }

// ParseConfig reads a diffusers AutoencoderKL config.json. Unknown fields
// are errors, as are values this package does not implement.
func ParseConfig(data []byte) (Config, error) {
	r, err := nn.NewConfigReader("vae", data)
	if err != nil {
		return Config{}, err
	}
	for _, name := range r.Names() {
		switch name {
		case "in_channels", "out_channels", "latent_channels", "block_out_channels", "down_block_types",
			"up_block_types", "layers_per_block", "norm_num_groups", "act_fn", "mid_block_add_attention",
			"use_quant_conv", "use_post_quant_conv", "scaling_factor", "shift_factor", "latents_mean",
			"latents_std", "force_upcast":
		case "_class_name", "_diffusers_version", "_name_or_path", "_use_default_values",
			"sample_size": // the training resolution: a hint for tiling in diffusers, unused here
		default:
			r.Failf(name, "unknown field (not an AutoencoderKL setting this package knows)")
		}
	}
	if cls, ok := r.OptString("_class_name"); ok && cls != "AutoencoderKL" {
		r.Failf("_class_name", "%q is not AutoencoderKL", cls)
	}
	c := Config{
		InChannels:        r.Int("in_channels", 3),
		OutChannels:       r.Int("out_channels", 3),
		LatentChannels:    r.Int("latent_channels", 4),
		BlockOutChannels:  r.Ints("block_out_channels", []int{64}),
		DownBlockTypes:    r.Strings("down_block_types", []string{DownEncoderBlock2D}),
		UpBlockTypes:      r.Strings("up_block_types", []string{UpDecoderBlock2D}),
		LayersPerBlock:    r.Int("layers_per_block", 1),
		NormGroups:        r.Int("norm_num_groups", 32),
		MidBlockAttention: r.Bool("mid_block_add_attention", true),
		UseQuantConv:      r.Bool("use_quant_conv", true),
		UsePostQuantConv:  r.Bool("use_post_quant_conv", true),
		ScalingFactor:     r.Float("scaling_factor", 0.18215),
		LatentsMean:       r.OptFloats("latents_mean"),
		LatentsStd:        r.OptFloats("latents_std"),
		ForceUpcast:       r.Bool("force_upcast", true),
	}
	c.ShiftFactor, _ = r.OptFloat("shift_factor")
	if act := r.String("act_fn", "silu"); act != "silu" && act != "swish" {
		r.Failf("act_fn", "activation %q is not implemented (silu)", act)
	}
	for _, t := range c.DownBlockTypes {
		if t != DownEncoderBlock2D {
			r.Failf("down_block_types", "block type %q is not implemented (DownEncoderBlock2D)", t)
		}
	}
	for _, t := range c.UpBlockTypes {
		if t != UpDecoderBlock2D {
			r.Failf("up_block_types", "block type %q is not implemented (UpDecoderBlock2D)", t)
		}
	}
	if err := r.Err(); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks that the numbers describe a buildable autoencoder.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("vae config: field %q: %s", field, fmt.Sprintf(format, args...))
	}
	// Limits far above any real model keep a hostile config from declaring
	// absurd sizes.
	const maxWidth = 1 << 16
	n := len(c.BlockOutChannels)
	switch {
	case n == 0:
		return bad("block_out_channels", "is empty")
	case n > 8:
		return bad("block_out_channels", "%d levels is more than this package supports (8)", n)
	case len(c.DownBlockTypes) != n:
		return bad("down_block_types", "has %d entries, block_out_channels has %d", len(c.DownBlockTypes), n)
	case len(c.UpBlockTypes) != n:
		return bad("up_block_types", "has %d entries, block_out_channels has %d", len(c.UpBlockTypes), n)
	case c.InChannels < 1 || c.InChannels > maxWidth:
		return bad("in_channels", "%d is not in [1, %d]", c.InChannels, maxWidth)
	case c.OutChannels < 1 || c.OutChannels > maxWidth:
		return bad("out_channels", "%d is not in [1, %d]", c.OutChannels, maxWidth)
	case c.LatentChannels < 1 || c.LatentChannels > maxWidth:
		return bad("latent_channels", "%d is not in [1, %d]", c.LatentChannels, maxWidth)
	case c.LayersPerBlock < 1 || c.LayersPerBlock > 64:
		return bad("layers_per_block", "%d is not in [1, 64]", c.LayersPerBlock)
	case c.NormGroups < 1:
		return bad("norm_num_groups", "%d is not positive", c.NormGroups)
	case !(c.ScalingFactor > 0):
		return bad("scaling_factor", "%g is not positive", c.ScalingFactor)
	}
	for i, ch := range c.BlockOutChannels {
		if c.DownBlockTypes[i] != DownEncoderBlock2D {
			return bad("down_block_types", "block type %q is not implemented (DownEncoderBlock2D)", c.DownBlockTypes[i])
		}
		if c.UpBlockTypes[i] != UpDecoderBlock2D {
			return bad("up_block_types", "block type %q is not implemented (UpDecoderBlock2D)", c.UpBlockTypes[i])
		}
		if ch > maxWidth {
			return bad("block_out_channels", "width %d exceeds the limit of %d", ch, maxWidth)
		}
		if ch < 1 || ch%c.NormGroups != 0 {
			return bad("block_out_channels", "width %d of level %d is not a positive multiple of norm_num_groups %d", ch, i, c.NormGroups)
		}
	}
	switch {
	case c.LatentsMean == nil && c.LatentsStd != nil:
		return bad("latents_std", "given without latents_mean")
	case c.LatentsMean != nil && c.LatentsStd == nil:
		return bad("latents_mean", "given without latents_std")
	}
	if c.LatentsMean != nil {
		if len(c.LatentsMean) != c.LatentChannels {
			return bad("latents_mean", "has %d values, want one per latent channel (%d)", len(c.LatentsMean), c.LatentChannels)
		}
		if len(c.LatentsStd) != c.LatentChannels {
			return bad("latents_std", "has %d values, want one per latent channel (%d)", len(c.LatentsStd), c.LatentChannels)
		}
		for _, s := range c.LatentsStd {
			if !(s > 0) {
				return bad("latents_std", "value %g is not positive", s)
			}
		}
	}
	return nil
}

// Normalize maps posterior samples x (B, LatentChannels, H, W), in place,
// to the latents a diffusion model works on: (x − shift)·scale, or with
// latents_mean/std (x − mean_c)·scale/std_c.
func (c *Config) Normalize(x []float32, shape [4]int) error {
	return c.affine(x, shape, false)
}

// Denormalize inverts Normalize in place: the latents a sampler produced
// become the input Decode expects.
func (c *Config) Denormalize(z []float32, shape [4]int) error {
	return c.affine(z, shape, true)
}

func (c *Config) affine(x []float32, shape [4]int, inverse bool) error {
	if shape[1] != c.LatentChannels || len(x) != shape[0]*shape[1]*shape[2]*shape[3] {
		return fmt.Errorf("vae: latents of %d values, shape %v: want (B, %d, H, W)", len(x), shape, c.LatentChannels)
	}
	hw := shape[2] * shape[3]
	for b := range shape[0] {
		for ch := range shape[1] {
			shift, scale := c.ShiftFactor, c.ScalingFactor
			if c.LatentsMean != nil {
				shift, scale = c.LatentsMean[ch], c.ScalingFactor/c.LatentsStd[ch]
			}
			plane := x[(b*shape[1]+ch)*hw : (b*shape[1]+ch+1)*hw]
			for i, v := range plane {
				if inverse {
					plane[i] = float32(float64(v)/scale + shift)
				} else {
					plane[i] = float32((float64(v) - shift) * scale)
				}
			}
		}
	}
	return nil
}
