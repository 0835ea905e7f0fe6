package checkpoint

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
)

// SD 1.5 and SD 2.1 UNet configs (the architecture fields), as published.
const sd15UNet = `{"_class_name":"UNet2DConditionModel","act_fn":"silu","attention_head_dim":8,
 "block_out_channels":[320,640,1280,1280],"center_input_sample":false,"cross_attention_dim":768,
 "down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],
 "downsample_padding":1,"flip_sin_to_cos":true,"freq_shift":0,"in_channels":4,"layers_per_block":2,
 "mid_block_scale_factor":1,"norm_eps":1e-05,"norm_num_groups":32,"out_channels":4,"sample_size":64,
 "up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"]}`

const sd21UNet = `{"_class_name":"UNet2DConditionModel","act_fn":"silu","attention_head_dim":[5,10,20,20],
 "block_out_channels":[320,640,1280,1280],"center_input_sample":false,"cross_attention_dim":1024,
 "down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],
 "downsample_padding":1,"flip_sin_to_cos":true,"freq_shift":0,"in_channels":4,"layers_per_block":2,
 "mid_block_scale_factor":1,"norm_eps":1e-05,"norm_num_groups":32,"out_channels":4,"sample_size":96,
 "up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"],
 "use_linear_projection":true,"upcast_attention":true}`

const sdVAE = `{"_class_name":"AutoencoderKL","act_fn":"silu","block_out_channels":[128,256,512,512],
 "down_block_types":["DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D"],
 "in_channels":3,"latent_channels":4,"layers_per_block":2,"norm_num_groups":32,"out_channels":3,"sample_size":512,
 "scaling_factor":0.18215,"mid_block_add_attention":true,"use_quant_conv":true,"use_post_quant_conv":true,
 "up_block_types":["UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D"]}`

const clipL = `{"architectures":["CLIPTextModel"],"hidden_act":"quick_gelu","hidden_size":768,"intermediate_size":3072,
 "layer_norm_eps":1e-05,"max_position_embeddings":77,"num_attention_heads":12,"num_hidden_layers":12,"vocab_size":49408}`

// shapeSource is a Source that has shapes but no data, to exercise name
// mapping and config inference at full SD size without allocating it.
type shapeSource map[string][]int

func (s shapeSource) Names() []string {
	var n []string
	for k := range s {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

func (s shapeSource) Info(name string) (safetensors.TensorInfo, bool) {
	sh, ok := s[name]
	return safetensors.TensorInfo{Name: name, DType: "F32", Shape: append([]int(nil), sh...)}, ok
}

func (s shapeSource) Bytes(name string) ([]byte, error) {
	return nil, fmt.Errorf("shape-only source has no data for %q", name)
}

func mustUNet(t *testing.T, js string) UNetLayout {
	t.Helper()
	l, err := ParseUNetLayout([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustVAE(t *testing.T, js string) VAELayout {
	t.Helper()
	l, err := ParseVAELayout([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestNameTable checks the original ↔ diffusers mapping for every block
// type on the SD 1.5 layout, in both directions.
func TestNameTable(t *testing.T) {
	layout := Layout{UNetLayersPerBlock: 2, UNetUpAttention: []bool{false, true, true, true}, VAELevels: 4}
	unet := [][2]string{
		// conv_in, time embedding, conv_norm_out / conv_out
		{"input_blocks.0.0.weight", "conv_in.weight"},
		{"input_blocks.0.0.bias", "conv_in.bias"},
		{"time_embed.0.weight", "time_embedding.linear_1.weight"},
		{"time_embed.2.bias", "time_embedding.linear_2.bias"},
		{"out.0.weight", "conv_norm_out.weight"},
		{"out.2.bias", "conv_out.bias"},
		// down resnets: every inner module
		{"input_blocks.1.0.in_layers.0.weight", "down_blocks.0.resnets.0.norm1.weight"},
		{"input_blocks.1.0.in_layers.2.weight", "down_blocks.0.resnets.0.conv1.weight"},
		{"input_blocks.1.0.emb_layers.1.bias", "down_blocks.0.resnets.0.time_emb_proj.bias"},
		{"input_blocks.2.0.out_layers.0.bias", "down_blocks.0.resnets.1.norm2.bias"},
		{"input_blocks.2.0.out_layers.3.weight", "down_blocks.0.resnets.1.conv2.weight"},
		{"input_blocks.4.0.skip_connection.weight", "down_blocks.1.resnets.0.conv_shortcut.weight"},
		{"input_blocks.11.0.out_layers.3.bias", "down_blocks.3.resnets.1.conv2.bias"},
		// down attentions (transformer blocks keep their inner names)
		{"input_blocks.1.1.norm.weight", "down_blocks.0.attentions.0.norm.weight"},
		{"input_blocks.1.1.proj_in.weight", "down_blocks.0.attentions.0.proj_in.weight"},
		{"input_blocks.2.1.transformer_blocks.0.attn1.to_q.weight", "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q.weight"},
		{"input_blocks.5.1.transformer_blocks.0.attn2.to_k.weight", "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight"},
		{"input_blocks.7.1.transformer_blocks.0.ff.net.0.proj.bias", "down_blocks.2.attentions.0.transformer_blocks.0.ff.net.0.proj.bias"},
		{"input_blocks.8.1.transformer_blocks.0.norm3.weight", "down_blocks.2.attentions.1.transformer_blocks.0.norm3.weight"},
		{"input_blocks.8.1.proj_out.bias", "down_blocks.2.attentions.1.proj_out.bias"},
		// downsamplers
		{"input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"},
		{"input_blocks.6.0.op.bias", "down_blocks.1.downsamplers.0.conv.bias"},
		{"input_blocks.9.0.op.weight", "down_blocks.2.downsamplers.0.conv.weight"},
		// mid block
		{"middle_block.0.in_layers.0.weight", "mid_block.resnets.0.norm1.weight"},
		{"middle_block.1.transformer_blocks.0.attn2.to_out.0.weight", "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0.weight"},
		{"middle_block.1.proj_in.bias", "mid_block.attentions.0.proj_in.bias"},
		{"middle_block.2.emb_layers.1.weight", "mid_block.resnets.1.time_emb_proj.weight"},
		// up resnets, attentions, upsamplers (index 1 without attention, 2 with)
		{"output_blocks.0.0.skip_connection.weight", "up_blocks.0.resnets.0.conv_shortcut.weight"},
		{"output_blocks.2.0.in_layers.2.weight", "up_blocks.0.resnets.2.conv1.weight"},
		{"output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"},
		{"output_blocks.3.1.proj_out.weight", "up_blocks.1.attentions.0.proj_out.weight"},
		{"output_blocks.5.2.conv.bias", "up_blocks.1.upsamplers.0.conv.bias"},
		{"output_blocks.8.2.conv.weight", "up_blocks.2.upsamplers.0.conv.weight"},
		{"output_blocks.11.1.transformer_blocks.0.ff.net.2.weight", "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2.weight"},
		{"output_blocks.11.0.out_layers.3.weight", "up_blocks.3.resnets.2.conv2.weight"},
	}
	for _, c := range unet {
		got, err := UNetToDiffusers(c[0], layout.UNetLayersPerBlock)
		if err != nil || got != c[1] {
			t.Errorf("UNet %s → %q (%v), want %s", c[0], got, err, c[1])
		}
		back, err := UNetToOriginal(c[1], layout)
		if err != nil || back != c[0] {
			t.Errorf("UNet %s → %q (%v), want %s", c[1], back, err, c[0])
		}
	}
	vae := []struct {
		orig, diff string
		reshape    bool
	}{
		{"encoder.conv_in.weight", "encoder.conv_in.weight", false},
		{"encoder.down.0.block.0.norm1.weight", "encoder.down_blocks.0.resnets.0.norm1.weight", false},
		{"encoder.down.0.block.1.conv2.bias", "encoder.down_blocks.0.resnets.1.conv2.bias", false},
		{"encoder.down.1.block.0.nin_shortcut.weight", "encoder.down_blocks.1.resnets.0.conv_shortcut.weight", false},
		{"encoder.down.2.downsample.conv.weight", "encoder.down_blocks.2.downsamplers.0.conv.weight", false},
		{"encoder.mid.block_1.conv1.weight", "encoder.mid_block.resnets.0.conv1.weight", false},
		{"encoder.mid.block_2.norm2.bias", "encoder.mid_block.resnets.1.norm2.bias", false},
		{"encoder.mid.attn_1.norm.weight", "encoder.mid_block.attentions.0.group_norm.weight", false},
		{"encoder.mid.attn_1.q.weight", "encoder.mid_block.attentions.0.to_q.weight", true},
		{"encoder.mid.attn_1.k.bias", "encoder.mid_block.attentions.0.to_k.bias", false},
		{"encoder.mid.attn_1.v.weight", "encoder.mid_block.attentions.0.to_v.weight", true},
		{"decoder.mid.attn_1.proj_out.weight", "decoder.mid_block.attentions.0.to_out.0.weight", true},
		{"decoder.mid.attn_1.proj_out.bias", "decoder.mid_block.attentions.0.to_out.0.bias", false},
		{"encoder.norm_out.weight", "encoder.conv_norm_out.weight", false},
		{"encoder.conv_out.bias", "encoder.conv_out.bias", false},
		{"quant_conv.weight", "quant_conv.weight", false},
		{"post_quant_conv.bias", "post_quant_conv.bias", false},
		{"decoder.conv_in.weight", "decoder.conv_in.weight", false},
		{"decoder.up.3.block.0.conv1.weight", "decoder.up_blocks.0.resnets.0.conv1.weight", false},
		{"decoder.up.3.upsample.conv.weight", "decoder.up_blocks.0.upsamplers.0.conv.weight", false},
		{"decoder.up.1.block.0.nin_shortcut.weight", "decoder.up_blocks.2.resnets.0.conv_shortcut.weight", false},
		{"decoder.up.0.block.2.conv2.bias", "decoder.up_blocks.3.resnets.2.conv2.bias", false},
		{"decoder.norm_out.bias", "decoder.conv_norm_out.bias", false},
		{"decoder.conv_out.weight", "decoder.conv_out.weight", false},
	}
	for _, c := range vae {
		got, reshape, err := VAEToDiffusers(c.orig, layout.VAELevels)
		if err != nil || got != c.diff || reshape != c.reshape {
			t.Errorf("VAE %s → %q reshape %v (%v), want %s %v", c.orig, got, reshape, err, c.diff, c.reshape)
		}
		back, reshape, err := VAEToOriginal(c.diff, layout.VAELevels)
		if err != nil || back != c.orig || reshape != c.reshape {
			t.Errorf("VAE %s → %q reshape %v (%v), want %s", c.diff, back, reshape, err, c.orig)
		}
	}
	text := [][2]string{
		{"text_model.embeddings.token_embedding.weight", "embeddings.token_embedding.weight"},
		{"text_model.embeddings.position_embedding.weight", "embeddings.position_embedding.weight"},
		{"text_model.encoder.layers.11.self_attn.out_proj.weight", "encoder.layers.11.self_attn.out_proj.weight"},
		{"text_model.encoder.layers.0.mlp.fc1.bias", "encoder.layers.0.mlp.fc1.bias"},
		{"text_model.final_layer_norm.bias", "final_layer_norm.bias"},
	}
	for _, c := range text {
		got, err := TextToDiffusers(c[0])
		if err != nil || got != c[1] {
			t.Errorf("text %s → %q (%v), want %s", c[0], got, err, c[1])
		}
		if back := TextToOriginal(c[1]); back != c[0] {
			t.Errorf("text %s → %q, want %s", c[1], back, c[0])
		}
	}
	// Older files store the CLIP weights without "text_model.".
	if got, err := TextToDiffusers("encoder.layers.3.layer_norm2.weight"); err != nil || got != "encoder.layers.3.layer_norm2.weight" {
		t.Errorf("old-style text name → %q (%v)", got, err)
	}
	if got, err := TextToDiffusers("text_model.embeddings.position_ids"); err != nil || got != "" {
		t.Errorf("position_ids → %q (%v), want dropped", got, err)
	}
}

func TestNameMappingRejects(t *testing.T) {
	for _, n := range []string{
		"input_blocks.3.1.proj_in.weight", // a downsampling slot has no attention
		"input_blocks.1.0.in_layers.1.weight",
		"input_blocks.1.2.weight",
		"input_blocks.x.0.weight",
		"input_blocks.01.0.in_layers.0.weight",
		"middle_block.3.in_layers.0.weight",
		"output_blocks.1.1.conv.weight", // upsampler only in a block's last slot
		"time_embed.1.weight",
		"out.1.weight",
		"label_emb.0.1.weight", // label_emb.0.0 and .2 are SDXL's add_embedding
		"label_emb.0.0.scale",
		"input_blocks.1.1.transformer_blocks.0.attn1.to_q.scale",
		"",
	} {
		if got, err := UNetToDiffusers(n, 2); err == nil {
			t.Errorf("UNet %q mapped to %q", n, got)
		}
	}
	for _, n := range []string{"encoder.down.4.block.0.norm1.weight", "encoder.mid.attn_2.q.weight", "decoder.up.0.downsample.conv.weight", "loss.logvar", "encoder.down.0.block.0.norm3.weight"} {
		if got, _, err := VAEToDiffusers(n, 4); err == nil {
			t.Errorf("VAE %q mapped to %q", n, got)
		}
	}
	for _, n := range []string{"text_model.logit_scale", "text_projection.weight"} {
		if got, err := TextToDiffusers(n); err == nil {
			t.Errorf("text %q mapped to %q", n, got)
		}
	}
}

// TestFullSizeMapping maps every tensor of the SD 1.5 and SD 2.1 UNets,
// the SD VAE and CLIP ViT-L to original names and back: no two tensors may
// collide, every name must survive the round trip, and the counts are those
// of the published checkpoints.
func TestFullSizeMapping(t *testing.T) {
	vaeL := mustVAE(t, sdVAE)
	for _, c := range []struct {
		name  string
		unet  string
		count int
	}{{"sd15", sd15UNet, 686}, {"sd21", sd21UNet, 686}} {
		unetL := mustUNet(t, c.unet)
		layout := Layout{UNetLayersPerBlock: unetL.LayersPerBlock, UNetUpAttention: unetL.UpAttention, VAELevels: len(vaeL.BlockOut)}
		specs := unetL.ExpectedTensors()
		if len(specs) != c.count {
			t.Errorf("%s UNet: %d tensors, want %d", c.name, len(specs), c.count)
		}
		seen := map[string]string{}
		for _, s := range specs {
			o, err := UNetToOriginal(s.Name, layout)
			if err != nil {
				t.Fatal(err)
			}
			if prev, dup := seen[o]; dup {
				t.Fatalf("%s and %s both map to %s", prev, s.Name, o)
			}
			seen[o] = s.Name
			back, err := UNetToDiffusers(o, layout.UNetLayersPerBlock)
			if err != nil || back != s.Name {
				t.Fatalf("%s → %s → %s (%v)", s.Name, o, back, err)
			}
		}
	}
	specs := vaeL.ExpectedTensors()
	if len(specs) != 248 {
		t.Errorf("VAE: %d tensors, want 248", len(specs))
	}
	seen := map[string]bool{}
	for _, s := range specs {
		o, _, err := VAEToOriginal(s.Name, len(vaeL.BlockOut))
		if err != nil {
			t.Fatal(err)
		}
		if seen[o] {
			t.Fatalf("collision at %s", o)
		}
		seen[o] = true
		back, _, err := VAEToDiffusers(o, len(vaeL.BlockOut))
		if err != nil || back != s.Name {
			t.Fatalf("%s → %s → %s (%v)", s.Name, o, back, err)
		}
	}
	textL, err := ParseTextLayout([]byte(clipL))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(textL.ExpectedTensors()); n != 196 {
		t.Errorf("CLIP ViT-L: %d tensors, want 196", n)
	}
}

// originalSource renames a diffusers shape source into the original layout.
func originalSource(t *testing.T, unetL UNetLayout, vaeL VAELayout, textL TextLayout) shapeSource {
	t.Helper()
	layout := Layout{UNetLayersPerBlock: unetL.LayersPerBlock, UNetUpAttention: unetL.UpAttention, VAELevels: len(vaeL.BlockOut)}
	s := shapeSource{}
	for _, sp := range unetL.ExpectedTensors() {
		o, err := UNetToOriginal(sp.Name, layout)
		if err != nil {
			t.Fatal(err)
		}
		s[PrefixUNet+o] = sp.Shape
	}
	for _, sp := range vaeL.ExpectedTensors() {
		o, reshape, err := VAEToOriginal(sp.Name, layout.VAELevels)
		if err != nil {
			t.Fatal(err)
		}
		shape := sp.Shape
		if reshape {
			shape = append(append([]int(nil), shape...), 1, 1)
		}
		s[PrefixVAE+o] = shape
	}
	for _, sp := range textL.ExpectedTensors() {
		s[PrefixCLIP+TextToOriginal(sp.Name)] = sp.Shape
	}
	s[PrefixCLIP+"text_model.embeddings.position_ids"] = []int{1, textL.Positions}
	return s
}

func tokenizerDir(t *testing.T) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestInferFullSize builds SD 1.5- and SD 2.x-shaped original checkpoints
// (shapes only) and checks the configs inferred from them.
func TestInferFullSize(t *testing.T) {
	vaeL := mustVAE(t, sdVAE)
	for _, c := range []struct {
		name, unet string
		text       TextLayout
		heads      any
		linear     bool
		cross      float64
	}{
		{"sd15", sd15UNet, TextLayout{Hidden: 768, Intermediate: 3072, Layers: 12, Heads: 12, Vocab: 49408, Positions: 77}, 8.0, false, 768},
		{"sd2-unet", sd21UNet, TextLayout{Hidden: 1024, Intermediate: 4096, Layers: 23, Heads: 16, Vocab: 49408, Positions: 77}, []any{5.0, 10.0, 20.0, 20.0}, true, 1024},
	} {
		t.Run(c.name, func(t *testing.T) {
			unetL := mustUNet(t, c.unet)
			src := originalSource(t, unetL, vaeL, c.text)
			src["model_ema.decay"] = []int{}
			src["alphas_cumprod"] = []int{1000}
			m, err := FromOriginal(src, map[string]string{"modelspec.prediction_type": "v"}, Options{TokenizerDir: tokenizerDir(t)})
			if err != nil {
				t.Fatal(err)
			}
			var u map[string]any
			json.Unmarshal(m.UNetConfig, &u)
			if !reflect.DeepEqual(u["attention_head_dim"], c.heads) || u["use_linear_projection"] != c.linear || u["cross_attention_dim"] != c.cross {
				t.Errorf("unet config: heads %v linear %v cross %v", u["attention_head_dim"], u["use_linear_projection"], u["cross_attention_dim"])
			}
			if !reflect.DeepEqual(u["block_out_channels"], []any{320.0, 640.0, 1280.0, 1280.0}) || u["layers_per_block"] != 2.0 || u["transformer_layers_per_block"] != 1.0 {
				t.Errorf("unet config: %v", u)
			}
			if !reflect.DeepEqual(u["down_block_types"], []any{crossAttnDown, crossAttnDown, crossAttnDown, plainDown}) ||
				!reflect.DeepEqual(u["up_block_types"], []any{plainUp, crossAttnUp, crossAttnUp, crossAttnUp}) {
				t.Errorf("block types %v %v", u["down_block_types"], u["up_block_types"])
			}
			sameArch(t, "vae", m.VAEConfig, []byte(sdVAE))
			var te map[string]any
			json.Unmarshal(m.TextEncoderConfig, &te)
			if te["num_attention_heads"] != float64(c.text.Heads) || te["num_hidden_layers"] != float64(c.text.Layers) || te["intermediate_size"] != float64(c.text.Intermediate) {
				t.Errorf("text config %v", te)
			}
			if !strings.Contains(string(m.SchedulerConfig), `"v_prediction"`) {
				t.Errorf("prediction from metadata lost: %s", m.SchedulerConfig)
			}
			if len(m.Ignored) != 2 {
				t.Errorf("ignored %v", m.Ignored)
			}
			if info, _ := m.VAE.Info("decoder.mid_block.attentions.0.to_q.weight"); len(info.Shape) != 2 {
				t.Errorf("VAE attention presented as %v", info.Shape)
			}
		})
	}
}
