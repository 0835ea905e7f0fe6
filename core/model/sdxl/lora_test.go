package sdxl_test

import (
	"context"
	"slices"
	"testing"

	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// TestKohyaSDXLNames parses a kohya SDXL LoRA, whose UNet keys use the
// original (SGM) layout, against the tiny SDXL base: each key lands on its
// diffusers module (as diffusers' converter maps them), the text encoders'
// on te1/te2, and the LoRA changes the pipeline's latents.
func TestKohyaSDXLNames(t *testing.T) {
	p := openPipeline(t, "testdata/base", family.OpenOptions{})
	mods := p.LoRAModules()
	want := map[string]string{ // kohya body → module
		"input_blocks_4_1_transformer_blocks_0_attn1_to_q": "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
		"input_blocks_8_1_transformer_blocks_1_attn2_to_k": "down_blocks.2.attentions.1.transformer_blocks.1.attn2.to_k",
		"middle_block_1_proj_in":                           "mid_block.attentions.0.proj_in",
		"output_blocks_2_1_transformer_blocks_0_ff_net_2":  "up_blocks.0.attentions.2.transformer_blocks.0.ff.net.2",
		"input_blocks_1_0_in_layers_2":                     "down_blocks.0.resnets.0.conv1",
		"output_blocks_5_0_skip_connection":                "up_blocks.1.resnets.2.conv_shortcut",
	}
	shape := func(ns, name string) []int {
		for _, m := range mods[ns] {
			if m.Name == name {
				return m.Shape
			}
		}
		t.Fatalf("no module %s in %s", name, ns)
		return nil
	}
	var ts []safetensors.WriteTensor
	add := func(key string, sh []int) {
		down := []int{2, sh[1]}
		up := []int{sh[0], 2}
		if len(sh) == 4 {
			down = append(down, sh[2], sh[3])
			up = append(up, 1, 1)
		}
		fill := func(d []int) []float32 {
			n := 1
			for _, v := range d {
				n *= v
			}
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(i%7-3) * 0.05
			}
			return v
		}
		ts = append(ts, safetensors.F32Tensor(key+".lora_down.weight", down, fill(down)),
			safetensors.F32Tensor(key+".lora_up.weight", up, fill(up)))
	}
	for body, mod := range want {
		add("lora_unet_"+body, shape(lora.UNet, mod))
	}
	add("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", shape(lora.TextEncoder, "text_model.encoder.layers.0.self_attn.q_proj"))
	add("lora_te2_text_model_encoder_layers_1_mlp_fc1", shape(lora.TextEncoder2, "text_model.encoder.layers.1.mlp.fc1"))
	src, err := safetensors.NewMemory(ts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := lora.Parse(src, mods)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range l.Factors[lora.UNet] {
		got = append(got, f.Module)
	}
	var wantMods []string
	for _, m := range want {
		wantMods = append(wantMods, m)
	}
	slices.Sort(got)
	slices.Sort(wantMods)
	if !slices.Equal(got, wantMods) || len(l.Factors[lora.TextEncoder]) != 1 || len(l.Factors[lora.TextEncoder2]) != 1 {
		t.Fatalf("modules %v (te1 %d, te2 %d), want %v", got, len(l.Factors[lora.TextEncoder]), len(l.Factors[lora.TextEncoder2]), wantMods)
	}
	req := pipeline.Request{Prompt: "a red circle", Width: 64, Height: 64, Steps: 2, Guidance: 5, Seed: 1, SkipDecode: true}
	base, err := p.Generate(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.LoRAs = []lora.Use{{Name: "k", LoRA: l, UNet: 1, Text: 1}}
	with, err := p.Generate(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fixtures.RelErr(with.Latents, base.Latents) < 1e-4 {
		t.Error("the kohya SDXL LoRA changed nothing")
	}
}
