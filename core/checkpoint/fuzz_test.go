package checkpoint

import (
	"strings"
	"testing"
)

// FuzzOriginalNames maps arbitrary keys through the original → diffusers
// tables: no panic, and whatever maps must map back to the same key.
func FuzzOriginalNames(f *testing.F) {
	for _, s := range []string{
		"input_blocks.1.0.in_layers.0.weight", "input_blocks.3.0.op.bias", "output_blocks.2.1.conv.weight",
		"output_blocks.5.2.conv.weight", "middle_block.1.transformer_blocks.0.attn1.to_q.weight", "time_embed.2.bias",
		"out.0.weight", "encoder.down.1.block.0.nin_shortcut.weight", "decoder.up.0.upsample.conv.bias",
		"decoder.mid.attn_1.proj_out.weight", "encoder.norm_out.bias", "quant_conv.weight",
		"text_model.encoder.layers.3.self_attn.q_proj.weight", "input_blocks.-1.0.weight", "input_blocks.1..weight",
	} {
		f.Add(s, uint8(2))
	}
	f.Fuzz(func(t *testing.T, key string, n uint8) {
		lpb := int(n%4) + 1
		levels := int(n%5) + 1
		if d, err := UNetToDiffusers(key, lpb); err == nil {
			upAttn := make([]bool, 64)
			if strings.HasPrefix(key, "output_blocks.") && strings.HasSuffix(strings.TrimSuffix(strings.TrimSuffix(key, ".weight"), ".bias"), ".2.conv") {
				for i := range upAttn {
					upAttn[i] = true
				}
			}
			back, err := UNetToOriginal(d, Layout{UNetLayersPerBlock: lpb, UNetUpAttention: upAttn})
			if err == nil && back != key {
				t.Fatalf("UNet %q → %q → %q", key, d, back)
			}
			if err != nil && !strings.Contains(d, "upsamplers") {
				t.Fatalf("UNet %q → %q has no way back: %v", key, d, err)
			}
		}
		if d, reshape, err := VAEToDiffusers(key, levels); err == nil {
			back, r2, err := VAEToOriginal(d, levels)
			if err != nil || back != key || r2 != reshape {
				t.Fatalf("VAE %q → %q → %q (%v)", key, d, back, err)
			}
		}
		if d, err := TextToDiffusers(key); err == nil && d != "" {
			if back := TextToOriginal(d); back != key && back != "text_model."+key {
				t.Fatalf("text %q → %q → %q", key, d, back)
			}
		}
	})
}

// FuzzConfigs parses arbitrary JSON as each component config; a config
// that parses must yield a tensor list without panicking.
func FuzzConfigs(f *testing.F) {
	for _, s := range []string{sd15UNet, sd21UNet, sdVAE, clipL, `{}`, `[]`, `{"block_out_channels":[-1]}`,
		`{"block_out_channels":[4],"down_block_types":["DownBlock2D"],"up_block_types":["UpBlock2D"],"layers_per_block":1,"transformer_layers_per_block":[0]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, js []byte) {
		if l, err := ParseUNetLayout(js); err == nil {
			_ = l.ExpectedTensors()
		}
		if l, err := ParseVAELayout(js); err == nil {
			_ = l.ExpectedTensors()
		}
		if l, err := ParseTextLayout(js); err == nil && l.Layers <= 1024 {
			_ = l.ExpectedTensors()
		}
	})
}
