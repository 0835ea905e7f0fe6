package checkpoint

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/kiln-project/kiln/core/safetensors"
)

// SD 1.x/2.x constants of the original training setup.
const (
	sd1CrossAttentionDim = 768
	sd2CrossAttentionDim = 1024
	sd1Heads             = 8  // SD 1.x UNets use 8 heads at every level
	sd2HeadDim           = 64 // SD 2.x UNets use 64-channel heads
	clipHeadDim          = 64 // CLIP ViT-L/14 and OpenCLIP text towers use 64-channel heads
	sdScalingFactor      = 0.18215
)

// TensorError reports a tensor that is missing or does not fit; Name is
// the name as the caller presents it (callers may rewrite it to the name
// in the file).
type TensorError struct {
	What    string // "unet", "infer vae config", ...
	Name    string
	Problem string // "" for a missing tensor
}

// Error formats the message, naming the tensor.
func (e *TensorError) Error() string {
	if e.Problem == "" {
		return fmt.Sprintf("checkpoint: %s: missing tensor %q", e.What, e.Name)
	}
	return fmt.Sprintf("checkpoint: %s: tensor %q %s", e.What, e.Name, e.Problem)
}

// shapeOf returns the shape of a tensor that must exist with the given rank.
func shapeOf(src safetensors.Source, what, name string, rank int) ([]int, error) {
	info, ok := src.Info(name)
	if !ok {
		return nil, &TensorError{What: what, Name: name}
	}
	if len(info.Shape) != rank {
		return nil, &TensorError{What: what, Name: name, Problem: fmt.Sprintf("has shape %v, want %d dimensions", info.Shape, rank)}
	}
	for _, d := range info.Shape {
		if d <= 0 {
			return nil, &TensorError{What: what, Name: name, Problem: fmt.Sprintf("has empty shape %v", info.Shape)}
		}
	}
	return info.Shape, nil
}

// nameIndex answers "is there any tensor under this module path" over a
// source's sorted names.
type nameIndex []string

func (x nameIndex) hasPrefix(p string) bool {
	i := sort.SearchStrings(x, p)
	return i < len(x) && strings.HasPrefix(x[i], p)
}

// count counts the consecutive indices i = 0, 1, ... for which some tensor
// lies under the module path format(i) (which ends in ".").
func (x nameIndex) count(format func(int) string) int {
	n := 0
	for n < 1024 && x.hasPrefix(format(n)) {
		n++
	}
	return n
}

// intOrList encodes per-level values as one int when they are all equal.
func intOrList(v []int) any {
	for _, x := range v[1:] {
		if x != v[0] {
			return v
		}
	}
	return v[0]
}

// InferUNetConfig derives a diffusers UNet2DConditionModel config from the
// shapes of UNet tensors named as in diffusers. Heads follow the SD rule:
// 8 per level, except for a 1024-wide cross-attention (SD 2.x) where heads
// are 64 channels wide.
func InferUNetConfig(src safetensors.Source) ([]byte, error) {
	const what = "infer unet config"
	convIn, err := shapeOf(src, what, "conv_in.weight", 4)
	if err != nil {
		return nil, err
	}
	convOut, err := shapeOf(src, what, "conv_out.weight", 4)
	if err != nil {
		return nil, err
	}
	temb, err := shapeOf(src, what, "time_embedding.linear_1.weight", 2)
	if err != nil {
		return nil, err
	}
	idx := nameIndex(src.Names())
	levels := idx.count(func(b int) string { return fmt.Sprintf("down_blocks.%d.", b) })
	if levels == 0 {
		return nil, &TensorError{What: what, Name: "down_blocks.0.resnets.0.conv1.weight"}
	}
	lpb := idx.count(func(r int) string { return fmt.Sprintf("down_blocks.0.resnets.%d.", r) })
	blockOut := make([]int, levels)
	downTypes := make([]string, levels)
	upTypes := make([]string, levels)
	depth := make([]int, levels)
	crossDim, linearProj := 0, false
	sawAttention := false
	for b := 0; b < levels; b++ {
		s, err := shapeOf(src, what, fmt.Sprintf("down_blocks.%d.resnets.0.conv1.weight", b), 4)
		if err != nil {
			return nil, err
		}
		blockOut[b] = s[0]
		downTypes[b], depth[b] = plainDown, 1
		attn := fmt.Sprintf("down_blocks.%d.attentions.0", b)
		if idx.hasPrefix(attn + ".") {
			downTypes[b] = crossAttnDown
			depth[b] = idx.count(func(t int) string { return fmt.Sprintf("%s.transformer_blocks.%d.", attn, t) })
			if depth[b] == 0 {
				return nil, &TensorError{What: what, Name: attn + ".transformer_blocks.0.norm1.weight"}
			}
			if !sawAttention {
				sawAttention = true
				pin, ok := src.Info(attn + ".proj_in.weight")
				if !ok {
					return nil, &TensorError{What: what, Name: attn + ".proj_in.weight"}
				}
				if len(pin.Shape) != 2 && len(pin.Shape) != 4 {
					return nil, &TensorError{What: what, Name: attn + ".proj_in.weight", Problem: fmt.Sprintf("has shape %v, want a linear or 1×1 conv weight", pin.Shape)}
				}
				linearProj = len(pin.Shape) == 2
				k, err := shapeOf(src, what, attn+".transformer_blocks.0.attn2.to_k.weight", 2)
				if err != nil {
					return nil, err
				}
				crossDim = k[1]
			}
		}
		up := levels - 1 - b
		upTypes[up] = plainUp
		if idx.hasPrefix(fmt.Sprintf("up_blocks.%d.attentions.", up)) {
			upTypes[up] = crossAttnUp
		}
	}
	midAttn := "mid_block.attentions.0"
	midDepth := idx.count(func(t int) string { return fmt.Sprintf("%s.transformer_blocks.%d.", midAttn, t) })
	if midDepth == 0 {
		return nil, &TensorError{What: what, Name: midAttn + ".transformer_blocks.0.norm1.weight"}
	}
	if !sawAttention {
		k, err := shapeOf(src, what, midAttn+".transformer_blocks.0.attn2.to_k.weight", 2)
		if err != nil {
			return nil, err
		}
		crossDim = k[1]
		pin, _ := src.Info(midAttn + ".proj_in.weight")
		linearProj = len(pin.Shape) == 2
	}
	// Levels without attention have no transformer depth of their own;
	// describe them with the mid block's so that a uniform model is one
	// integer, as diffusers writes it.
	for b := range depth {
		if downTypes[b] == plainDown {
			depth[b] = midDepth
		}
	}
	if depth[levels-1] != midDepth {
		return nil, fmt.Errorf("checkpoint: %s: mid block has %d transformer layers, deepest level %d (diffusers ties them together)", what, midDepth, depth[levels-1])
	}
	var heads any = sd1Heads
	if crossDim == sd2CrossAttentionDim {
		h := make([]int, levels)
		for b, c := range blockOut {
			if c%sd2HeadDim != 0 {
				return nil, fmt.Errorf("checkpoint: %s: %d channels at level %d are not a multiple of the %d-channel SD 2.x heads", what, c, b, sd2HeadDim)
			}
			h[b] = c / sd2HeadDim
		}
		heads = intOrList(h)
	}
	cfg := map[string]any{
		"_class_name":                  "UNet2DConditionModel",
		"act_fn":                       "silu",
		"attention_head_dim":           heads,
		"block_out_channels":           blockOut,
		"center_input_sample":          false,
		"cross_attention_dim":          crossDim,
		"down_block_types":             downTypes,
		"downsample_padding":           1,
		"dual_cross_attention":         false,
		"flip_sin_to_cos":              true,
		"freq_shift":                   0,
		"in_channels":                  convIn[1],
		"layers_per_block":             lpb,
		"mid_block_scale_factor":       1,
		"mid_block_type":               midCrossAttn,
		"norm_eps":                     1e-5,
		"norm_num_groups":              32,
		"only_cross_attention":         false,
		"out_channels":                 convOut[0],
		"resnet_time_scale_shift":      "default",
		"sample_size":                  64,
		"transformer_layers_per_block": intOrList(depth),
		"up_block_types":               upTypes,
		"upcast_attention":             false,
		"use_linear_projection":        linearProj,
	}
	if temb[0] != 4*blockOut[0] {
		cfg["time_embedding_dim"] = temb[0]
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// InferVAEConfig derives a diffusers AutoencoderKL config from the shapes
// of VAE tensors named as in diffusers.
func InferVAEConfig(src safetensors.Source, scalingFactor float64) ([]byte, error) {
	const what = "infer vae config"
	convIn, err := shapeOf(src, what, "encoder.conv_in.weight", 4)
	if err != nil {
		return nil, err
	}
	convOut, err := shapeOf(src, what, "decoder.conv_out.weight", 4)
	if err != nil {
		return nil, err
	}
	decIn, err := shapeOf(src, what, "decoder.conv_in.weight", 4)
	if err != nil {
		return nil, err
	}
	idx := nameIndex(src.Names())
	levels := idx.count(func(b int) string { return fmt.Sprintf("encoder.down_blocks.%d.", b) })
	if levels == 0 {
		return nil, &TensorError{What: what, Name: "encoder.down_blocks.0.resnets.0.conv1.weight"}
	}
	lpb := idx.count(func(r int) string { return fmt.Sprintf("encoder.down_blocks.0.resnets.%d.", r) })
	blockOut := make([]int, levels)
	down := make([]string, levels)
	up := make([]string, levels)
	for b := range blockOut {
		s, err := shapeOf(src, what, fmt.Sprintf("encoder.down_blocks.%d.resnets.0.conv1.weight", b), 4)
		if err != nil {
			return nil, err
		}
		blockOut[b] = s[0]
		down[b], up[b] = vaeDown, vaeUp
	}
	cfg := map[string]any{
		"_class_name":             "AutoencoderKL",
		"act_fn":                  "silu",
		"block_out_channels":      blockOut,
		"down_block_types":        down,
		"force_upcast":            true,
		"in_channels":             convIn[1],
		"latent_channels":         decIn[1],
		"layers_per_block":        lpb,
		"mid_block_add_attention": idx.hasPrefix("encoder.mid_block.attentions.") || idx.hasPrefix("decoder.mid_block.attentions."),
		"norm_num_groups":         32,
		"out_channels":            convOut[0],
		"sample_size":             512,
		"scaling_factor":          scalingFactor,
		"shift_factor":            nil,
		"up_block_types":          up,
		"use_post_quant_conv":     idx.hasPrefix("post_quant_conv."),
		"use_quant_conv":          idx.hasPrefix("quant_conv."),
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// InferTextConfig derives a transformers CLIPTextModel config (as SD 1.x
// uses: quick_gelu, 64-channel heads) from the shapes of text encoder
// tensors named without "text_model.".
func InferTextConfig(src safetensors.Source) ([]byte, error) {
	return inferTextConfig(src, "quick_gelu")
}

// InferOpenCLIPTextConfig derives the CLIPTextModel config of an SD 2.x
// OpenCLIP text tower (GELU activation, 64-channel heads) from the shapes
// of its tensors as OpenCLIPToDiffusers presents them.
func InferOpenCLIPTextConfig(src safetensors.Source) ([]byte, error) {
	return inferTextConfig(src, "gelu")
}

func inferTextConfig(src safetensors.Source, act string) ([]byte, error) {
	const what = "infer text encoder config"
	tok, err := shapeOf(src, what, "embeddings.token_embedding.weight", 2)
	if err != nil {
		return nil, err
	}
	pos, err := shapeOf(src, what, "embeddings.position_embedding.weight", 2)
	if err != nil {
		return nil, err
	}
	layers := nameIndex(src.Names()).count(func(i int) string { return fmt.Sprintf("encoder.layers.%d.", i) })
	if layers == 0 {
		return nil, &TensorError{What: what, Name: "encoder.layers.0.mlp.fc1.weight"}
	}
	fc1, err := shapeOf(src, what, "encoder.layers.0.mlp.fc1.weight", 2)
	if err != nil {
		return nil, err
	}
	hidden := tok[1]
	if pos[1] != hidden || fc1[1] != hidden {
		return nil, fmt.Errorf("checkpoint: %s: widths disagree: token embedding %d, position embedding %d, fc1 input %d", what, hidden, pos[1], fc1[1])
	}
	if hidden%clipHeadDim != 0 {
		return nil, fmt.Errorf("checkpoint: %s: hidden size %d is not a multiple of CLIP's %d-channel heads, so the head count cannot be inferred; pass the text encoder config in Options.TextEncoderConfig", what, hidden, clipHeadDim)
	}
	cfg := map[string]any{
		"architectures":           []string{"CLIPTextModel"},
		"attention_dropout":       0.0,
		"bos_token_id":            49406,
		"eos_token_id":            49407,
		"hidden_act":              act,
		"hidden_size":             hidden,
		"initializer_factor":      1.0,
		"initializer_range":       0.02,
		"intermediate_size":       fc1[0],
		"layer_norm_eps":          1e-5,
		"max_position_embeddings": pos[0],
		"model_type":              "clip_text_model",
		"num_attention_heads":     hidden / clipHeadDim,
		"num_hidden_layers":       layers,
		"pad_token_id":            49407,
		"projection_dim":          hidden,
		"vocab_size":              tok[0],
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// DefaultSchedulerConfig returns the SD 1.x/2.x training noise schedule as
// a diffusers EulerDiscreteScheduler config with the given prediction type
// ("epsilon" or "v_prediction").
func DefaultSchedulerConfig(prediction string) []byte {
	cfg := map[string]any{
		"_class_name":            "EulerDiscreteScheduler",
		"beta_end":               0.012,
		"beta_schedule":          "scaled_linear",
		"beta_start":             0.00085,
		"clip_sample":            false,
		"final_sigmas_type":      "zero",
		"interpolation_type":     "linear",
		"num_train_timesteps":    1000,
		"prediction_type":        prediction,
		"rescale_betas_zero_snr": false,
		"set_alpha_to_one":       false,
		"sigma_max":              nil,
		"sigma_min":              nil,
		"steps_offset":           1,
		"timestep_spacing":       "linspace",
		"timestep_type":          "discrete",
		"trained_betas":          nil,
		"use_beta_sigmas":        false,
		"use_exponential_sigmas": false,
		"use_karras_sigmas":      false,
	}
	js, _ := json.MarshalIndent(cfg, "", "  ") // a literal map of plain values cannot fail
	return js
}
