package unet

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/kiln-project/kiln/core/model/nn"
)

// Block type names as diffusers spells them.
const (
	CrossAttnDownBlock2D    = "CrossAttnDownBlock2D"
	DownBlock2D             = "DownBlock2D"
	CrossAttnUpBlock2D      = "CrossAttnUpBlock2D"
	UpBlock2D               = "UpBlock2D"
	UNetMidBlock2DCrossAttn = "UNetMidBlock2DCrossAttn"
)

// Config is the architecture of a UNet2DConditionModel, resolved from
// unet/config.json with diffusers' semantics: per-block settings given as
// one number are expanded to one value per down block.
type Config struct {
	InChannels  int
	OutChannels int
	// BlockOutChannels holds the width of each resolution level.
	BlockOutChannels []int
	// LayersPerBlock is the number of ResNets per down block (the matching
	// up block has one more).
	LayersPerBlock []int
	DownBlockTypes []string
	UpBlockTypes   []string
	// MidBlockType is UNetMidBlock2DCrossAttn, or "" for no mid block.
	MidBlockType string
	// Heads is the number of attention heads per down block
	// (num_attention_heads, or attention_head_dim when that is null, as in
	// every SD 1.x/2.x config).
	Heads []int
	// CrossAttentionDim is the width of the text context per down block.
	CrossAttentionDim []int
	// TransformerLayers is the number of BasicTransformerBlocks per
	// Transformer2D, per down block.
	TransformerLayers   []int
	UseLinearProjection bool
	UpcastAttention     bool
	NormGroups          int
	NormEps             float64
	FlipSinToCos        bool
	FreqShift           float64
	DownsamplePadding   int
	// TimeEmbedDim is the width of the time embedding (time_embedding_dim,
	// or 4 × BlockOutChannels[0]).
	TimeEmbedDim int
	// AdditionEmbedType is "" or AdditionTextTime (SDXL): a pooled text
	// embedding and micro-conditioning time ids, embedded and added to the
	// time embedding.
	AdditionEmbedType string
	// AdditionTimeEmbedDim is the sinusoid width of each time id
	// (addition_time_embed_dim).
	AdditionTimeEmbedDim int
	// AddEmbedInputDim is the input width of the added embedding
	// (projection_class_embeddings_input_dim): the pooled text width plus
	// AdditionTimeEmbedDim per time id.
	AddEmbedInputDim int
}

// AdditionTextTime is the addition_embed_type of SDXL UNets.
const AdditionTextTime = "text_time"

// TimeIDCount returns how many micro-conditioning time ids a model with
// added text_time embeddings takes next to pooled text embeddings of width
// textDim (6 for SDXL base: original size, crop, target size; 5 for the
// refiner, whose last id is the aesthetic score).
func (c *Config) TimeIDCount(textDim int) (int, error) {
	if c.AdditionEmbedType != AdditionTextTime {
		return 0, fmt.Errorf("unet: the model takes no added text_time conditioning")
	}
	rest := c.AddEmbedInputDim - textDim
	if textDim < 1 || rest < 1 || rest%c.AdditionTimeEmbedDim != 0 {
		return 0, fmt.Errorf("unet: projection_class_embeddings_input_dim %d does not hold pooled text of width %d plus whole time ids of width %d",
			c.AddEmbedInputDim, textDim, c.AdditionTimeEmbedDim)
	}
	return rest / c.AdditionTimeEmbedDim, nil
}

// Levels returns the number of resolution levels (down blocks).
func (c *Config) Levels() int { return len(c.BlockOutChannels) }

// Factor returns how much the sample's height and width must divide by:
// 2 to the number of downsampling blocks.
func (c *Config) Factor() int { return 1 << (c.Levels() - 1) }

// ContextDim returns the width of the text context that Forward expects:
// the cross_attention_dim of the blocks with attention (Validate checks that
// they agree, as one context feeds them all).
func (c *Config) ContextDim() int {
	for i := range c.BlockOutChannels {
		if c.usesAttention(i) {
			return c.CrossAttentionDim[i]
		}
	}
	return c.CrossAttentionDim[0]
}

// ParseConfig reads a diffusers UNet2DConditionModel config.json. Every
// field name must be known: fields that change the architecture in ways
// this package does not implement are accepted only at their default value,
// fields without effect on inference are ignored explicitly, and anything
// else is an error naming the field.
func ParseConfig(data []byte) (Config, error) {
	r, err := nn.NewConfigReader("unet", data)
	if err != nil {
		return Config{}, err
	}
	for _, name := range r.Names() {
		if !knownField(name) {
			r.Failf(name, "unknown field (not a UNet2DConditionModel setting this package knows)")
		}
	}
	if cls, ok := r.OptString("_class_name"); ok && cls != "UNet2DConditionModel" {
		r.Failf("_class_name", "%q is not UNet2DConditionModel", cls)
	}
	checkUnimplemented(r)

	var c Config
	c.InChannels = r.Int("in_channels", 4)
	c.OutChannels = r.Int("out_channels", 4)
	c.BlockOutChannels = r.Ints("block_out_channels", []int{320, 640, 1280, 1280})
	c.DownBlockTypes = r.Strings("down_block_types", []string{CrossAttnDownBlock2D, CrossAttnDownBlock2D, CrossAttnDownBlock2D, DownBlock2D})
	c.UpBlockTypes = r.Strings("up_block_types", []string{UpBlock2D, CrossAttnUpBlock2D, CrossAttnUpBlock2D, CrossAttnUpBlock2D})
	c.MidBlockType = UNetMidBlock2DCrossAttn
	if r.Raw("mid_block_type") != "" { // present: a type name, or null for none
		c.MidBlockType, _ = r.OptString("mid_block_type")
	}
	if err := r.Err(); err != nil {
		return Config{}, err
	}
	n := len(c.BlockOutChannels)
	if n == 0 {
		r.Failf("block_out_channels", "is empty")
	}
	if len(c.DownBlockTypes) != n {
		r.Failf("down_block_types", "has %d entries, block_out_channels has %d", len(c.DownBlockTypes), n)
	}
	if len(c.UpBlockTypes) != n {
		r.Failf("up_block_types", "has %d entries, down_block_types has %d", len(c.UpBlockTypes), n)
	}
	if err := r.Err(); err != nil {
		return Config{}, err
	}
	for _, t := range c.DownBlockTypes {
		if t != CrossAttnDownBlock2D && t != DownBlock2D {
			r.Failf("down_block_types", "block type %q is not implemented (CrossAttnDownBlock2D, DownBlock2D)", t)
		}
	}
	for _, t := range c.UpBlockTypes {
		if t != CrossAttnUpBlock2D && t != UpBlock2D {
			r.Failf("up_block_types", "block type %q is not implemented (CrossAttnUpBlock2D, UpBlock2D)", t)
		}
	}
	if c.MidBlockType != "" && c.MidBlockType != UNetMidBlock2DCrossAttn {
		r.Failf("mid_block_type", "%q is not implemented (UNetMidBlock2DCrossAttn or null)", c.MidBlockType)
	}

	c.LayersPerBlock = r.IntPerBlock("layers_per_block", 2, n, false)
	// diffusers: num_attention_heads = num_attention_heads or attention_head_dim.
	if r.Null("num_attention_heads") {
		c.Heads = r.IntPerBlock("attention_head_dim", 8, n, false)
	} else {
		c.Heads = r.IntPerBlock("num_attention_heads", 8, n, false)
	}
	c.CrossAttentionDim = r.IntPerBlock("cross_attention_dim", 1280, n, false)
	c.TransformerLayers = r.IntPerBlock("transformer_layers_per_block", 1, n, false)
	c.UseLinearProjection = r.Bool("use_linear_projection", false)
	if !r.Null("upcast_attention") { // null (SDXL's configs) is off, as in diffusers
		c.UpcastAttention = r.Bool("upcast_attention", false)
	}
	c.NormGroups = r.Int("norm_num_groups", 32)
	c.NormEps = r.Float("norm_eps", 1e-5)
	c.FlipSinToCos = r.Bool("flip_sin_to_cos", true)
	c.FreqShift = r.Float("freq_shift", 0)
	c.DownsamplePadding = r.Int("downsample_padding", 1)
	c.TimeEmbedDim = 4 * c.BlockOutChannels[0]
	if d, ok := r.OptInt("time_embedding_dim"); ok {
		c.TimeEmbedDim = d
	}
	if t, ok := r.OptString("addition_embed_type"); ok {
		if t != AdditionTextTime {
			r.Failf("addition_embed_type", "%q is not implemented (text_time or null)", t)
		}
		c.AdditionEmbedType = t
		c.AdditionTimeEmbedDim = r.Int("addition_time_embed_dim", 0)
		c.AddEmbedInputDim = r.Int("projection_class_embeddings_input_dim", 0)
	}
	if act := r.String("act_fn", "silu"); act != "silu" && act != "swish" {
		r.Failf("act_fn", "activation %q is not implemented (silu)", act)
	}
	if err := r.Err(); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks that the numbers describe a buildable network.
func (c *Config) Validate() error {
	n := len(c.BlockOutChannels)
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("unet config: field %q: %s", field, fmt.Sprintf(format, args...))
	}
	if n == 0 {
		return bad("block_out_channels", "is empty")
	}
	if len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n || len(c.LayersPerBlock) != n ||
		len(c.Heads) != n || len(c.CrossAttentionDim) != n || len(c.TransformerLayers) != n {
		return bad("block_out_channels", "per-block settings do not all have %d entries", n)
	}
	// Limits far above any real model keep a hostile config from declaring
	// absurd numbers of layers or sizes.
	const maxWidth, maxLayers, maxLevels = 1 << 16, 64, 8
	if n > maxLevels {
		return bad("block_out_channels", "%d levels exceed the limit of %d", n, maxLevels)
	}
	for i := range n {
		if t := c.DownBlockTypes[i]; t != CrossAttnDownBlock2D && t != DownBlock2D {
			return bad("down_block_types", "block type %q is not implemented (CrossAttnDownBlock2D, DownBlock2D)", t)
		}
		if t := c.UpBlockTypes[i]; t != CrossAttnUpBlock2D && t != UpBlock2D {
			return bad("up_block_types", "block type %q is not implemented (CrossAttnUpBlock2D, UpBlock2D)", t)
		}
	}
	if c.MidBlockType != "" && c.MidBlockType != UNetMidBlock2DCrossAttn {
		return bad("mid_block_type", "%q is not implemented (UNetMidBlock2DCrossAttn or null)", c.MidBlockType)
	}
	if c.InChannels < 1 || c.InChannels > maxWidth {
		return bad("in_channels", "%d is not in [1, %d]", c.InChannels, maxWidth)
	}
	if c.OutChannels < 1 || c.OutChannels > maxWidth {
		return bad("out_channels", "%d is not in [1, %d]", c.OutChannels, maxWidth)
	}
	if c.TimeEmbedDim > maxWidth {
		return bad("time_embedding_dim", "%d exceeds the limit of %d", c.TimeEmbedDim, maxWidth)
	}
	if c.NormGroups < 1 {
		return bad("norm_num_groups", "%d is not positive", c.NormGroups)
	}
	if !(c.NormEps > 0) {
		return bad("norm_eps", "%g is not positive", c.NormEps)
	}
	if c.DownsamplePadding < 0 || c.DownsamplePadding > 1 {
		return bad("downsample_padding", "%d is not 0 or 1", c.DownsamplePadding)
	}
	if c.TimeEmbedDim < 1 {
		return bad("time_embedding_dim", "%d is not positive", c.TimeEmbedDim)
	}
	if c.BlockOutChannels[0] < 2 {
		return bad("block_out_channels", "first width %d is too small for a timestep embedding", c.BlockOutChannels[0])
	}
	for i, ch := range c.BlockOutChannels {
		if ch > maxWidth {
			return bad("block_out_channels", "width %d exceeds the limit of %d", ch, maxWidth)
		}
		if c.LayersPerBlock[i] > maxLayers {
			return bad("layers_per_block", "block %d: %d layers exceed the limit of %d", i, c.LayersPerBlock[i], maxLayers)
		}
		if c.TransformerLayers[i] > maxLayers {
			return bad("transformer_layers_per_block", "block %d: %d layers exceed the limit of %d", i, c.TransformerLayers[i], maxLayers)
		}
		if c.CrossAttentionDim[i] > maxWidth {
			return bad("cross_attention_dim", "block %d: %d exceeds the limit of %d", i, c.CrossAttentionDim[i], maxWidth)
		}
		if ch < 1 || ch%c.NormGroups != 0 {
			return bad("block_out_channels", "width %d of block %d is not a positive multiple of norm_num_groups %d", ch, i, c.NormGroups)
		}
		if c.LayersPerBlock[i] < 1 {
			return bad("layers_per_block", "block %d has %d layers", i, c.LayersPerBlock[i])
		}
		if c.usesAttention(i) {
			if c.Heads[i] < 1 || ch%c.Heads[i] != 0 {
				return bad("attention_head_dim", "block %d: %d channels do not divide into %d heads", i, ch, c.Heads[i])
			}
			if c.CrossAttentionDim[i] < 1 {
				return bad("cross_attention_dim", "block %d: %d is not positive", i, c.CrossAttentionDim[i])
			}
			if c.CrossAttentionDim[i] != c.ContextDim() {
				return bad("cross_attention_dim", "block %d attends to width %d, another block to %d: one context cannot feed both", i, c.CrossAttentionDim[i], c.ContextDim())
			}
			if c.TransformerLayers[i] < 1 {
				return bad("transformer_layers_per_block", "block %d: %d is not positive", i, c.TransformerLayers[i])
			}
		}
	}
	switch c.AdditionEmbedType {
	case "":
	case AdditionTextTime:
		if c.AdditionTimeEmbedDim < 1 || c.AdditionTimeEmbedDim > maxWidth {
			return bad("addition_time_embed_dim", "%d is not in [1, %d]", c.AdditionTimeEmbedDim, maxWidth)
		}
		if c.AddEmbedInputDim <= c.AdditionTimeEmbedDim || c.AddEmbedInputDim > maxWidth {
			return bad("projection_class_embeddings_input_dim", "%d is not in (addition_time_embed_dim %d, %d]", c.AddEmbedInputDim, c.AdditionTimeEmbedDim, maxWidth)
		}
	default:
		return bad("addition_embed_type", "%q is not implemented (text_time or null)", c.AdditionEmbedType)
	}
	// Up blocks concatenate skips of the down path: their widths follow
	// from the reversed list, which the checks above cover.
	return nil
}

// usesAttention reports whether down block i, the up block mirroring it or
// (for the last level) the mid block has attention using settings [i].
func (c *Config) usesAttention(i int) bool {
	n := len(c.BlockOutChannels)
	return c.DownBlockTypes[i] == CrossAttnDownBlock2D || c.UpBlockTypes[n-1-i] == CrossAttnUpBlock2D ||
		(i == n-1 && c.MidBlockType != "")
}

// knownField classifies every field of UNet2DConditionModel's config.
func knownField(name string) bool {
	switch name {
	// Implemented.
	case "act_fn", "attention_head_dim", "block_out_channels", "cross_attention_dim",
		"down_block_types", "downsample_padding", "flip_sin_to_cos", "freq_shift", "in_channels",
		"layers_per_block", "mid_block_type", "norm_eps", "norm_num_groups", "num_attention_heads",
		"out_channels", "transformer_layers_per_block", "up_block_types", "upcast_attention",
		"use_linear_projection", "time_embedding_dim", "addition_embed_type":
		return true
	}
	if _, ok := unimplementedDefault(name); ok {
		return true
	}
	return ignoredField(name)
}

// ignoredField lists fields that have no effect on inference with the block
// types this package implements.
func ignoredField(name string) bool {
	switch name {
	case "_class_name", "_diffusers_version", "_name_or_path", "_use_default_values",
		// Input size hint for the pipeline, not the model.
		"sample_size",
		// Training only.
		"dropout",
		// Used only by block types or embeddings that are rejected here:
		// resnet_skip_time_act and cross_attention_norm by the SimpleCrossAttn
		// and ResnetDownsample blocks, mid_block_only_cross_attention by
		// UNetMidBlock2DSimpleCrossAttn, addition_embed_type_num_heads by
		// addition_embed_type "text" (rejected), addition_time_embed_dim and
		// projection_class_embeddings_input_dim when addition_embed_type is
		// null (read with text_time), class_embeddings_concat by
		// class_embed_type (rejected unless null).
		"resnet_skip_time_act", "cross_attention_norm", "mid_block_only_cross_attention",
		"addition_embed_type_num_heads", "addition_time_embed_dim",
		"projection_class_embeddings_input_dim", "class_embeddings_concat":
		return true
	}
	return false
}

// unimplementedDefault returns, for fields that change the architecture in
// ways not implemented, the JSON values accepted (the defaults).
func unimplementedDefault(name string) ([]string, bool) {
	switch name {
	case "class_embed_type", "encoder_hid_dim", "encoder_hid_dim_type",
		"num_class_embeds", "time_cond_proj_dim", "timestep_post_act", "time_embedding_act_fn",
		"reverse_transformer_layers_per_block":
		return []string{"null"}, true
	case "center_input_sample", "dual_cross_attention":
		return []string{"false"}, true
	case "only_cross_attention":
		return []string{"false"}, true // or a list of false, checked below
	case "resnet_time_scale_shift":
		return []string{`"default"`}, true
	case "attention_type":
		return []string{`"default"`}, true
	case "time_embedding_type":
		return []string{`"positional"`}, true
	case "conv_in_kernel", "conv_out_kernel":
		return []string{"3"}, true
	case "resnet_out_scale_factor", "mid_block_scale_factor":
		return []string{"1"}, true
	}
	return nil, false
}

func checkUnimplemented(r *nn.ConfigReader) {
	for _, name := range r.Names() {
		allowed, ok := unimplementedDefault(name)
		if !ok {
			continue
		}
		raw := r.Raw(name)
		switch name {
		case "resnet_out_scale_factor", "mid_block_scale_factor":
			if f, ok := r.OptFloat(name); ok && f == 1 {
				continue
			}
		case "conv_in_kernel", "conv_out_kernel":
			if v, ok := r.OptInt(name); ok && v == 3 {
				continue
			}
		case "only_cross_attention":
			var all []bool
			if raw == "false" {
				continue
			}
			if json.Unmarshal([]byte(raw), &all) == nil && !slices.Contains(all, true) {
				continue // false, or a list of false
			}
		default:
			if slices.Contains(allowed, raw) {
				continue
			}
		}
		r.Failf(name, "value %s is not implemented (only %v is supported)", raw, allowed)
	}
}
