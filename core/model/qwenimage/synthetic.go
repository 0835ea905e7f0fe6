package qwenimage

import (
	"fmt"
	"strings"

	"github.com/kiln-project/kiln/core/model/modeltest"
	"github.com/kiln-project/kiln/core/model/qwen2"
	"github.com/kiln-project/kiln/core/model/wanvae"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/sample"
	"github.com/kiln-project/kiln/core/tokenizer"
)

// Configs of the synthetic model: Qwen-Image's architecture (z 16, patch
// 2, 3-axis RoPE, Wan VAE with factor 8) at a small width, so that the CPU
// backend runs it in seconds. The full-size model (20B transformer, 7B
// text encoder) needs the GPU's TransformerOps.
const (
	syntheticText = `{"text_config": {"vocab_size": 259, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
		"num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "hidden_act": "silu",
		"rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default", "type": "mrope"}}}`
	syntheticTransformer = `{"attention_head_dim": 32, "axes_dims_rope": [8, 12, 12], "in_channels": 64, "joint_attention_dim": 64,
		"num_attention_heads": 4, "num_layers": 2, "out_channels": 16, "patch_size": 2}`
	syntheticVAE = `{"base_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 1, "attn_scales": [], "temperal_downsample": [false, true, true],
		"z_dim": 16, "input_channels": 3, "dropout": 0.0, "latents_mean": [%s], "latents_std": [%s]}`
	// syntheticScheduler is Qwen-Image's scheduler config.
	syntheticScheduler = `{"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
		"max_image_seq_len": 8192, "max_shift": 0.9, "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": 0.02,
		"time_shift_type": "exponential", "use_dynamic_shifting": true}`
)

// Synthetic returns a random-weight Qwen-Image checkpoint at a small
// width (see the configs above), its weights generated from seed as they
// are read, with a byte-level tokenizer: for timing and for exercising the
// family without a download.
func Synthetic(seed uint64) (*Checkpoint, error) {
	c := &Checkpoint{schedJSON: []byte(syntheticScheduler)}
	var err error
	if c.tok, err = tokenizer.NewQwen2ByteLevel([]string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}); err != nil {
		return nil, err
	}
	if c.textCfg, err = qwen2.ParseConfig([]byte(syntheticText)); err != nil {
		return nil, err
	}
	if c.trCfg, err = ParseTransformerConfig([]byte(syntheticTransformer)); err != nil {
		return nil, err
	}
	mean, std := strings.TrimSuffix(strings.Repeat("0.0, ", 16), ", "), strings.TrimSuffix(strings.Repeat("1.0, ", 16), ", ")
	if c.vaeCfg, err = wanvae.ParseConfig(fmt.Appendf(nil, syntheticVAE, mean, std)); err != nil {
		return nil, err
	}
	if c.sched, err = sample.ParseFlowMatchConfig(c.schedJSON); err != nil {
		return nil, err
	}
	text := qwen2.WeightInfos(c.textCfg)
	for i := range text {
		text[i].Name = "model." + text[i].Name // as Qwen2_5_VLForConditionalGeneration stores them
	}
	for _, s := range []struct {
		dst   *safetensors.Source
		infos []safetensors.TensorInfo
		salt  uint64
		dtype string
	}{
		{&c.text, text, 1, "BF16"},
		{&c.transformer, TransformerWeightInfos(c.trCfg), 2, "BF16"},
		{&c.vae, wanvae.WeightInfos(c.vaeCfg), 3, "F16"},
	} {
		r, err := modeltest.NewRandom(s.infos, seed*4+s.salt, s.dtype)
		if err != nil {
			return nil, fmt.Errorf("qwenimage: synthetic: %w", err)
		}
		*s.dst = r
	}
	return c, nil
}
