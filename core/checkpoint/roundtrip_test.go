package checkpoint

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tokenizer"
	"github.com/kiln-project/kiln/internal/fixtures"
)

func loadFixture(t *testing.T) *Model {
	t.Helper()
	dir := fixtures.Require(t, "sd15-tiny/model")
	m, err := Load(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// sameTensors checks that two sources hold the same names, dtypes, shapes
// and bytes.
func sameTensors(t *testing.T, what string, got, want safetensors.Source) {
	t.Helper()
	gn, wn := got.Names(), want.Names()
	if !reflect.DeepEqual(gn, wn) {
		t.Fatalf("%s: %d names vs %d; first differences: %v", what, len(gn), len(wn), firstDiff(gn, wn))
	}
	for _, n := range wn {
		gi, _ := got.Info(n)
		wi, _ := want.Info(n)
		if gi.DType != wi.DType || !reflect.DeepEqual(gi.Shape, wi.Shape) {
			t.Fatalf("%s: %s: %s %v, want %s %v", what, n, gi.DType, gi.Shape, wi.DType, wi.Shape)
		}
		gb, err := got.Bytes(n)
		if err != nil {
			t.Fatal(err)
		}
		wb, _ := want.Bytes(n)
		if !bytes.Equal(gb, wb) {
			t.Fatalf("%s: %s: bytes differ", what, n)
		}
	}
}

func firstDiff(a, b []string) []string {
	in := func(s []string, x string) bool {
		for _, y := range s {
			if y == x {
				return true
			}
		}
		return false
	}
	var d []string
	for _, x := range a {
		if !in(b, x) {
			d = append(d, "+"+x)
		}
	}
	for _, x := range b {
		if !in(a, x) {
			d = append(d, "-"+x)
		}
	}
	if len(d) > 6 {
		d = d[:6]
	}
	return d
}

func TestLoadDiffusersFixture(t *testing.T) {
	m := loadFixture(t)
	if m.Layout != LayoutDiffusers || !strings.HasSuffix(m.TokenizerDir, "tokenizer") {
		t.Fatalf("layout %s tokenizer %s", m.Layout, m.TokenizerDir)
	}
	dir := fixtures.Require(t, "sd15-tiny/model")
	for _, c := range []struct {
		src  safetensors.Source
		file string
	}{{m.UNet, "unet/diffusion_pytorch_model.safetensors"}, {m.VAE, "vae/diffusion_pytorch_model.safetensors"}, {m.TextEncoder, "text_encoder/model.safetensors"}} {
		f, err := safetensors.Open(filepath.Join(dir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		sameTensors(t, c.file, c.src, f)
		f.Close()
	}
	if !json.Valid(m.SchedulerConfig) || !json.Valid(m.UNetConfig) {
		t.Fatal("invalid configs")
	}
}

// archFields are the config fields that decide a component's architecture.
var archFields = map[string][]string{
	"unet": {"act_fn", "attention_head_dim", "block_out_channels", "center_input_sample", "cross_attention_dim",
		"down_block_types", "downsample_padding", "flip_sin_to_cos", "freq_shift", "in_channels", "layers_per_block",
		"mid_block_scale_factor", "mid_block_type", "norm_eps", "norm_num_groups", "out_channels",
		"transformer_layers_per_block", "up_block_types", "upcast_attention", "use_linear_projection", "only_cross_attention", "dual_cross_attention", "resnet_time_scale_shift"},
	"vae": {"act_fn", "block_out_channels", "down_block_types", "in_channels", "latent_channels", "layers_per_block",
		"mid_block_add_attention", "norm_num_groups", "out_channels", "scaling_factor", "up_block_types", "use_post_quant_conv", "use_quant_conv"},
	"text_encoder": {"architectures", "hidden_act", "hidden_size", "intermediate_size", "layer_norm_eps", "max_position_embeddings",
		"num_hidden_layers", "vocab_size", "bos_token_id", "eos_token_id", "pad_token_id"},
}

func sameArch(t *testing.T, what string, got, want []byte) {
	t.Helper()
	var g, w map[string]any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	json.Unmarshal(want, &w)
	for _, k := range archFields[what] {
		if !reflect.DeepEqual(g[k], w[k]) {
			t.Errorf("%s config: %s = %v, want %v", what, k, g[k], w[k])
		}
	}
}

// TestSingleFileRoundTrip writes the fixture model in the original
// single-file layout and loads it back: the same tensors under the same
// diffusers names, byte for byte, with configs inferred from the shapes.
func TestSingleFileRoundTrip(t *testing.T) {
	m := loadFixture(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "sd15-tiny.safetensors")
	if err := WriteSingleFile(p, m, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"model.diffusion_model.input_blocks.0.0.weight",
		"model.diffusion_model.input_blocks.3.0.op.weight",
		"model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
		"model.diffusion_model.output_blocks.2.2.conv.weight",
		"model.diffusion_model.output_blocks.5.0.skip_connection.weight",
		"first_stage_model.decoder.up.0.block.0.nin_shortcut.weight",
		"first_stage_model.encoder.mid.attn_1.q.weight",
		"cond_stage_model.transformer.text_model.encoder.layers.4.mlp.fc2.bias",
		"cond_stage_model.transformer.text_model.embeddings.position_ids",
	} {
		if _, ok := f.Info(want); !ok {
			t.Errorf("written file lacks %s", want)
		}
	}
	if info, _ := f.Info("first_stage_model.encoder.mid.attn_1.q.weight"); len(info.Shape) != 4 {
		t.Errorf("VAE attention weight written as %v, want (C, C, 1, 1)", info.Shape)
	}
	f.Close()

	te := fixtures.Require(t, "sd15-tiny/model/text_encoder/config.json")
	teCfg, _ := os.ReadFile(te)
	// Without a tokenizer beside the file or in the options, the embedded
	// CLIP vocabulary serves: the file alone loads.
	alone, err := Load(p, Options{TextEncoderConfig: teCfg})
	if err != nil {
		t.Fatalf("load without a tokenizer folder: %v", err)
	}
	if alone.TokenizerDir != "" || alone.EmbeddedPad != tokenizer.PadSD1 {
		t.Fatalf("tokenizer %q, embedded pad %q", alone.TokenizerDir, alone.EmbeddedPad)
	}
	if tok, err := alone.Tokenizer(); err != nil || tok.VocabSize() != tokenizer.CLIPVocabSize {
		t.Fatalf("embedded tokenizer: %v", err)
	}
	alone.Close()
	// The fixture's 32-wide text encoder has 4 heads, which no shape tells.
	_, err = Load(p, Options{TokenizerDir: m.TokenizerDir})
	if err == nil || !strings.Contains(err.Error(), "head count cannot be inferred") {
		t.Fatalf("load of a non-standard-width text encoder without its config: %v", err)
	}
	back, err := Load(p, Options{TokenizerDir: m.TokenizerDir, TextEncoderConfig: teCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if back.Layout != LayoutSingleFile {
		t.Fatal(back.Layout)
	}
	sameTensors(t, "unet", back.UNet, m.UNet)
	sameTensors(t, "vae", back.VAE, m.VAE)
	sameTensors(t, "text_encoder", back.TextEncoder, m.TextEncoder)
	sameArch(t, "unet", back.UNetConfig, m.UNetConfig)
	sameArch(t, "vae", back.VAEConfig, m.VAEConfig)
	sameArch(t, "text_encoder", back.TextEncoderConfig, m.TextEncoderConfig)
	var sched map[string]any
	json.Unmarshal(back.SchedulerConfig, &sched)
	if sched["prediction_type"] != "epsilon" || sched["beta_schedule"] != "scaled_linear" {
		t.Fatalf("scheduler %v", sched)
	}
}
