package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
)

// Block type names of the diffusers UNet and VAE configs this package maps.
const (
	crossAttnDown = "CrossAttnDownBlock2D"
	plainDown     = "DownBlock2D"
	crossAttnUp   = "CrossAttnUpBlock2D"
	plainUp       = "UpBlock2D"
	midCrossAttn  = "UNetMidBlock2DCrossAttn"
	vaeDown       = "DownEncoderBlock2D"
	vaeUp         = "UpDecoderBlock2D"
)

// maxLevels bounds the resolution levels a config may declare.
const maxLevels = 16

// UNetLayout is the part of a UNet2DConditionModel config that decides
// which tensors the model holds and how they are named.
type UNetLayout struct {
	InChannels, OutChannels int
	BlockOut                []int  // channels per level
	LayersPerBlock          int    // resnets per down level (up levels hold one more)
	DownAttention           []bool // per down level: CrossAttnDownBlock2D
	UpAttention             []bool // per up level (deepest first): CrossAttnUpBlock2D
	DownDepth               []int  // transformer blocks per attention, per down level
	UpDepth                 []int  // per up level
	MidDepth                int    // transformer blocks in the mid attention
	CrossAttentionDim       int
	UseLinearProjection     bool
	AttentionHeads          []int // heads per level as the config states them
	TimeEmbeddingDim        int   // 0: 4 × BlockOut[0]
	// AddEmbedInputDim is the input width of SDXL's added text_time
	// embedding (projection_class_embeddings_input_dim); 0 without one.
	AddEmbedInputDim int
}

// VAELayout is the part of an AutoencoderKL config that decides its tensors.
type VAELayout struct {
	InChannels, OutChannels, LatentChannels int
	BlockOut                                []int
	LayersPerBlock                          int
	MidAttention                            bool
	QuantConv, PostQuantConv                bool
}

// TextLayout is the part of a CLIPTextModel config that decides its tensors.
type TextLayout struct {
	Hidden, Intermediate, Layers, Heads, Vocab, Positions int
	// Projection is the projection_dim of a CLIPTextModelWithProjection
	// (SDXL's second encoder); 0 for a CLIPTextModel.
	Projection int
}

// jsonInts decodes an int or a list of ints; n>0 broadcasts a single int.
func jsonInts(raw json.RawMessage, n int, field string) ([]int, error) {
	var one int
	if err := json.Unmarshal(raw, &one); err == nil {
		out := make([]int, n)
		for i := range out {
			out[i] = one
		}
		return out, nil
	}
	var list []int
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("%s: want an integer or a list of integers, got %s", field, raw)
	}
	if n > 0 && len(list) != n {
		return nil, fmt.Errorf("%s: %d values for %d blocks", field, len(list), n)
	}
	return list, nil
}

// configObject decodes a JSON config as an object, keeping raw values.
func configObject(js []byte, what string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(js, &m); err != nil {
		return nil, fmt.Errorf("checkpoint: %s config: %w", what, err)
	}
	if m == nil {
		return nil, fmt.Errorf("checkpoint: %s config is not a JSON object", what)
	}
	return m, nil
}

func getInt(m map[string]json.RawMessage, key string, def int, what string) (int, error) {
	raw, ok := m[key]
	if !ok || string(raw) == "null" {
		if def < 0 {
			return 0, fmt.Errorf("checkpoint: %s config: missing %q", what, key)
		}
		return def, nil
	}
	var v int
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, fmt.Errorf("checkpoint: %s config: %q: want an integer, got %s", what, key, raw)
	}
	return v, nil
}

func getStrings(m map[string]json.RawMessage, key, what string) ([]string, error) {
	raw, ok := m[key]
	if !ok {
		return nil, fmt.Errorf("checkpoint: %s config: missing %q", what, key)
	}
	var v []string
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("checkpoint: %s config: %q: want a list of strings, got %s", what, key, raw)
	}
	return v, nil
}

func checkClass(m map[string]json.RawMessage, want, what string) error {
	raw, ok := m["_class_name"]
	if !ok {
		return nil
	}
	var c string
	if err := json.Unmarshal(raw, &c); err != nil || c != want {
		return fmt.Errorf("checkpoint: %s config: _class_name %s is not %s", what, raw, want)
	}
	return nil
}

// ParseUNetLayout reads the tensor layout from a diffusers UNet config.
// Block types other than the SD 1.x/2.x ones are refused, naming the field.
func ParseUNetLayout(js []byte) (UNetLayout, error) {
	const what = "unet"
	m, err := configObject(js, what)
	if err != nil {
		return UNetLayout{}, err
	}
	if err := checkClass(m, "UNet2DConditionModel", what); err != nil {
		return UNetLayout{}, err
	}
	var l UNetLayout
	if err := checkUNetExtras(m); err != nil {
		return l, err
	}
	if l.InChannels, err = getInt(m, "in_channels", 4, what); err != nil {
		return l, err
	}
	if l.OutChannels, err = getInt(m, "out_channels", 4, what); err != nil {
		return l, err
	}
	raw, ok := m["block_out_channels"]
	if !ok {
		return l, fmt.Errorf("checkpoint: unet config: missing \"block_out_channels\"")
	}
	if l.BlockOut, err = jsonInts(raw, 0, "block_out_channels"); err != nil || len(l.BlockOut) == 0 {
		return l, fmt.Errorf("checkpoint: unet config: block_out_channels: %v", err)
	}
	n := len(l.BlockOut)
	if n > maxLevels {
		return l, fmt.Errorf("checkpoint: unet config: %d levels is too many", n)
	}
	for _, c := range l.BlockOut {
		if c <= 0 {
			return l, fmt.Errorf("checkpoint: unet config: block_out_channels %v", l.BlockOut)
		}
	}
	if l.LayersPerBlock, err = getInt(m, "layers_per_block", 2, what); err != nil {
		return l, err
	}
	if l.LayersPerBlock < 1 || l.LayersPerBlock > 64 {
		return l, fmt.Errorf("checkpoint: unet config: layers_per_block %d out of range", l.LayersPerBlock)
	}
	down, err := getStrings(m, "down_block_types", what)
	if err != nil {
		return l, err
	}
	up, err := getStrings(m, "up_block_types", what)
	if err != nil {
		return l, err
	}
	if len(down) != n || len(up) != n {
		return l, fmt.Errorf("checkpoint: unet config: %d down and %d up block types for %d levels", len(down), len(up), n)
	}
	for i, t := range down {
		switch t {
		case crossAttnDown:
			l.DownAttention = append(l.DownAttention, true)
		case plainDown:
			l.DownAttention = append(l.DownAttention, false)
		default:
			return l, fmt.Errorf("checkpoint: unet config: down_block_types[%d]: unsupported block type %q", i, t)
		}
	}
	for i, t := range up {
		switch t {
		case crossAttnUp:
			l.UpAttention = append(l.UpAttention, true)
		case plainUp:
			l.UpAttention = append(l.UpAttention, false)
		default:
			return l, fmt.Errorf("checkpoint: unet config: up_block_types[%d]: unsupported block type %q", i, t)
		}
	}
	if raw, ok := m["mid_block_type"]; ok {
		var mt *string
		if err := json.Unmarshal(raw, &mt); err != nil || mt == nil || *mt != midCrossAttn {
			return l, fmt.Errorf("checkpoint: unet config: mid_block_type: unsupported %s", raw)
		}
	}
	l.DownDepth = make([]int, n)
	for i := range l.DownDepth {
		l.DownDepth[i] = 1
	}
	if raw, ok := m["transformer_layers_per_block"]; ok && string(raw) != "null" {
		if l.DownDepth, err = jsonInts(raw, n, "transformer_layers_per_block"); err != nil {
			return l, fmt.Errorf("checkpoint: unet config: %w", err)
		}
	}
	l.UpDepth = make([]int, n)
	for i := range l.UpDepth {
		l.UpDepth[i] = l.DownDepth[n-1-i]
	}
	if raw, ok := m["reverse_transformer_layers_per_block"]; ok && string(raw) != "null" {
		return l, fmt.Errorf("checkpoint: unet config: reverse_transformer_layers_per_block is not supported")
	}
	l.MidDepth = l.DownDepth[n-1]
	for _, d := range append(append([]int(nil), l.DownDepth...), l.MidDepth) {
		if d < 1 || d > 64 {
			return l, fmt.Errorf("checkpoint: unet config: transformer_layers_per_block %v out of range", l.DownDepth)
		}
	}
	if l.CrossAttentionDim, err = getInt(m, "cross_attention_dim", 768, what); err != nil {
		return l, err
	}
	if raw, ok := m["use_linear_projection"]; ok {
		if err := json.Unmarshal(raw, &l.UseLinearProjection); err != nil {
			return l, fmt.Errorf("checkpoint: unet config: use_linear_projection: %s", raw)
		}
	}
	if l.TimeEmbeddingDim, err = getInt(m, "time_embedding_dim", 0, what); err != nil {
		return l, err
	}
	if textTime(m) {
		if l.AddEmbedInputDim, err = getInt(m, "projection_class_embeddings_input_dim", -1, what); err != nil {
			return l, err
		}
		if l.AddEmbedInputDim <= 0 || l.AddEmbedInputDim > 1<<20 {
			return l, fmt.Errorf("checkpoint: unet config: projection_class_embeddings_input_dim %d out of range", l.AddEmbedInputDim)
		}
	}
	if raw, ok := m["attention_head_dim"]; ok && string(raw) != "null" {
		if l.AttentionHeads, err = jsonInts(raw, n, "attention_head_dim"); err != nil {
			return l, fmt.Errorf("checkpoint: unet config: %w", err)
		}
	}
	return l, nil
}

// ParseVAELayout reads the tensor layout from a diffusers AutoencoderKL config.
func ParseVAELayout(js []byte) (VAELayout, error) {
	const what = "vae"
	m, err := configObject(js, what)
	if err != nil {
		return VAELayout{}, err
	}
	if err := checkClass(m, "AutoencoderKL", what); err != nil {
		return VAELayout{}, err
	}
	var l VAELayout
	if l.InChannels, err = getInt(m, "in_channels", 3, what); err != nil {
		return l, err
	}
	if l.OutChannels, err = getInt(m, "out_channels", 3, what); err != nil {
		return l, err
	}
	if l.LatentChannels, err = getInt(m, "latent_channels", 4, what); err != nil {
		return l, err
	}
	raw, ok := m["block_out_channels"]
	if !ok {
		return l, fmt.Errorf("checkpoint: vae config: missing \"block_out_channels\"")
	}
	if l.BlockOut, err = jsonInts(raw, 0, "block_out_channels"); err != nil || len(l.BlockOut) == 0 {
		return l, fmt.Errorf("checkpoint: vae config: block_out_channels: %v", err)
	}
	if len(l.BlockOut) > maxLevels {
		return l, fmt.Errorf("checkpoint: vae config: %d levels is too many", len(l.BlockOut))
	}
	for _, c := range l.BlockOut {
		if c <= 0 {
			return l, fmt.Errorf("checkpoint: vae config: block_out_channels %v", l.BlockOut)
		}
	}
	if l.LayersPerBlock, err = getInt(m, "layers_per_block", 1, what); err != nil {
		return l, err
	}
	if l.LayersPerBlock < 1 || l.LayersPerBlock > 64 {
		return l, fmt.Errorf("checkpoint: vae config: layers_per_block %d out of range", l.LayersPerBlock)
	}
	for _, k := range []string{"down_block_types", "up_block_types"} {
		types, err := getStrings(m, k, what)
		if err != nil {
			return l, err
		}
		want := vaeDown
		if k == "up_block_types" {
			want = vaeUp
		}
		if len(types) != len(l.BlockOut) {
			return l, fmt.Errorf("checkpoint: vae config: %s: %d types for %d levels", k, len(types), len(l.BlockOut))
		}
		for i, t := range types {
			if t != want {
				return l, fmt.Errorf("checkpoint: vae config: %s[%d]: unsupported block type %q", k, i, t)
			}
		}
	}
	l.MidAttention, l.QuantConv, l.PostQuantConv = true, true, true
	for key, dst := range map[string]*bool{"mid_block_add_attention": &l.MidAttention, "use_quant_conv": &l.QuantConv, "use_post_quant_conv": &l.PostQuantConv} {
		if raw, ok := m[key]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, dst); err != nil {
				return l, fmt.Errorf("checkpoint: vae config: %s: want a boolean, got %s", key, raw)
			}
		}
	}
	return l, nil
}

// ParseTextLayout reads the tensor layout from a transformers CLIPTextModel config.
func ParseTextLayout(js []byte) (TextLayout, error) {
	const what = "text encoder"
	m, err := configObject(js, what)
	if err != nil {
		return TextLayout{}, err
	}
	var l TextLayout
	if raw, ok := m["architectures"]; ok && string(raw) != "null" {
		var archs []string
		if err := json.Unmarshal(raw, &archs); err != nil || len(archs) != 1 || (archs[0] != "CLIPTextModel" && archs[0] != "CLIPTextModelWithProjection") {
			return TextLayout{}, fmt.Errorf("checkpoint: text encoder config: architectures %s: only CLIPTextModel and CLIPTextModelWithProjection are supported", raw)
		}
		if archs[0] == "CLIPTextModelWithProjection" {
			if l.Projection, err = getInt(m, "projection_dim", 512, what); err != nil {
				return l, err
			}
			if l.Projection <= 0 || l.Projection > 1<<20 {
				return l, fmt.Errorf("checkpoint: text encoder config: projection_dim = %d out of range", l.Projection)
			}
		}
	}
	for key, dst := range map[string]*int{"hidden_size": &l.Hidden, "intermediate_size": &l.Intermediate,
		"num_hidden_layers": &l.Layers, "num_attention_heads": &l.Heads, "vocab_size": &l.Vocab, "max_position_embeddings": &l.Positions} {
		if *dst, err = getInt(m, key, -1, what); err != nil {
			return l, err
		}
		if *dst <= 0 || (key == "num_hidden_layers" && *dst > 1024) {
			return l, fmt.Errorf("checkpoint: text encoder config: %s = %d out of range", key, *dst)
		}
	}
	return l, nil
}

// unetNeutral lists UNet config fields that add or reshape tensors, with
// the JSON values under which they do not (the SD 1.x/2.x values). Any
// other value is refused, naming the field, since the tensors would not
// follow the layout this package maps.
var unetNeutral = map[string][]string{
	"addition_embed_type":                   {"null"},
	"class_embed_type":                      {"null"},
	"num_class_embeds":                      {"null"},
	"encoder_hid_dim":                       {"null"},
	"encoder_hid_dim_type":                  {"null"},
	"time_cond_proj_dim":                    {"null"},
	"projection_class_embeddings_input_dim": {"null"},
	"conv_in_kernel":                        {"3"},
	"conv_out_kernel":                       {"3"},
	"attention_type":                        {`"default"`},
	"dual_cross_attention":                  {"false"},
	"only_cross_attention":                  {"false"},
	"time_embedding_type":                   {`"positional"`},
	"mid_block_only_cross_attention":        {"null", "false"},
	"num_attention_heads":                   {"null"},
	"class_embeddings_concat":               {"false"},
	"timestep_post_act":                     {"null"},
}

// textTime reports whether a UNet config has SDXL's added text_time
// embedding.
func textTime(m map[string]json.RawMessage) bool {
	return string(bytes.TrimSpace(m["addition_embed_type"])) == `"text_time"`
}

func checkUNetExtras(m map[string]json.RawMessage) error {
	for key, ok := range unetNeutral {
		raw, present := m[key]
		if !present {
			continue
		}
		if textTime(m) && (key == "addition_embed_type" || key == "projection_class_embeddings_input_dim") {
			continue // SDXL: mapped (add_embedding ↔ label_emb.0)
		}
		v := string(bytes.Join(bytes.Fields(raw), nil))
		if !slices.Contains(ok, v) {
			return fmt.Errorf("checkpoint: unet config: %s = %s is not supported (this loader maps SD 1.x/2.x and SDXL UNets)", key, raw)
		}
	}
	return nil
}
