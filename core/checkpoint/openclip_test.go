package checkpoint

import (
	"encoding/json"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
)

// randomTensor makes an F32 write tensor of the given shape.
func randomTensor(r *rand.Rand, name string, shape []int) safetensors.WriteTensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return safetensors.F32Tensor(name, shape, v)
}

// writeSD2Like writes a small SD 2.x-style single file: the fixture's UNet
// layout with a 64-wide cross-attention, the fixture VAE, and an OpenCLIP
// text tower of three resblocks (hidden 64, intermediate 128).
func writeSD2Like(t *testing.T, edit func(*safetensors.WriteTensor) bool) (string, *Model, map[string]safetensors.WriteTensor) {
	t.Helper()
	ref := loadFixture(t)
	var ucfg map[string]any
	json.Unmarshal(ref.UNetConfig, &ucfg)
	ucfg["cross_attention_dim"] = 64
	ucfg["use_linear_projection"] = true
	js, _ := json.Marshal(ucfg)
	unetL, err := ParseUNetLayout(js)
	if err != nil {
		t.Fatal(err)
	}
	vaeL, _ := ParseVAELayout(ref.VAEConfig)
	layout := Layout{UNetLayersPerBlock: unetL.LayersPerBlock, UNetUpAttention: unetL.UpAttention, VAELevels: len(vaeL.BlockOut)}
	r := rand.New(rand.NewPCG(7, 8))
	var ts []safetensors.WriteTensor
	for _, sp := range unetL.ExpectedTensors() {
		o, err := UNetToOriginal(sp.Name, layout)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, randomTensor(r, PrefixUNet+o, sp.Shape))
	}
	for _, n := range ref.VAE.Names() {
		o, reshape, err := VAEToOriginal(n, layout.VAELevels)
		if err != nil {
			t.Fatal(err)
		}
		wt, _ := safetensors.FromSource(ref.VAE, n, PrefixVAE+o)
		if reshape {
			wt.Shape = append(wt.Shape, 1, 1)
		}
		ts = append(ts, wt)
	}
	const h, inter, blocks = 64, 128, 3
	byName := map[string]safetensors.WriteTensor{}
	addText := func(name string, shape ...int) {
		wt := randomTensor(r, PrefixOpenCLIP+name, shape)
		byName[name] = wt
		ts = append(ts, wt)
	}
	addText("token_embedding.weight", 1000, h)
	addText("positional_embedding", 77, h)
	addText("ln_final.weight", h)
	addText("ln_final.bias", h)
	addText("text_projection", h, h)
	addText("logit_scale")
	for i := 0; i < blocks; i++ {
		p := "transformer.resblocks." + itoa(i) + "."
		addText(p+"ln_1.weight", h)
		addText(p+"ln_1.bias", h)
		addText(p+"ln_2.weight", h)
		addText(p+"ln_2.bias", h)
		addText(p+"attn.in_proj_weight", 3*h, h)
		addText(p+"attn.in_proj_bias", 3*h)
		addText(p+"attn.out_proj.weight", h, h)
		addText(p+"attn.out_proj.bias", h)
		addText(p+"mlp.c_fc.weight", inter, h)
		addText(p+"mlp.c_fc.bias", inter)
		addText(p+"mlp.c_proj.weight", h, inter)
		addText(p+"mlp.c_proj.bias", h)
	}
	if edit != nil {
		ts = slices.DeleteFunc(ts, func(wt safetensors.WriteTensor) bool { return !edit(&wt) })
		for i := range ts {
			edit(&ts[i])
		}
	}
	p := filepath.Join(t.TempDir(), "sd2like.safetensors")
	if err := safetensors.WriteFile(p, ts, map[string]string{"modelspec.prediction_type": "v"}); err != nil {
		t.Fatal(err)
	}
	return p, ref, byName
}

func TestOpenCLIPSingleFile(t *testing.T) {
	p, ref, text := writeSD2Like(t, nil)
	m, err := Load(p, Options{TokenizerDir: ref.TokenizerDir})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var cfg map[string]any
	json.Unmarshal(m.TextEncoderConfig, &cfg)
	want := map[string]any{"hidden_act": "gelu", "hidden_size": 64.0, "intermediate_size": 128.0, "num_hidden_layers": 2.0,
		"num_attention_heads": 1.0, "vocab_size": 1000.0, "max_position_embeddings": 77.0}
	for k, v := range want {
		if !reflect.DeepEqual(cfg[k], v) {
			t.Errorf("text config %s = %v, want %v", k, cfg[k], v)
		}
	}
	var u map[string]any
	json.Unmarshal(m.UNetConfig, &u)
	if u["cross_attention_dim"] != 64.0 || u["use_linear_projection"] != true {
		t.Errorf("unet config %v", u)
	}
	if !strings.Contains(string(m.SchedulerConfig), "v_prediction") {
		t.Error("prediction type from metadata lost")
	}
	// q, k, v are the row thirds of the fused projection; others map 1:1.
	in, _ := text["transformer.resblocks.1.attn.in_proj_weight"].Data, 0
	rowBytes := 64 * 4
	for j, q := range []string{"q_proj", "k_proj", "v_proj"} {
		b, err := m.TextEncoder.Bytes("encoder.layers.1.self_attn." + q + ".weight")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(b, in[j*64*rowBytes:(j+1)*64*rowBytes]) {
			t.Errorf("%s is not third %d of in_proj_weight", q, j)
		}
		bias, _, _ := safetensors.Float32(m.TextEncoder, "encoder.layers.0.self_attn."+q+".bias")
		all := text["transformer.resblocks.0.attn.in_proj_bias"].Data
		if got, _ := m.TextEncoder.Bytes("encoder.layers.0.self_attn." + q + ".bias"); !reflect.DeepEqual(got, all[j*64*4:(j+1)*64*4]) || len(bias) != 64 {
			t.Errorf("%s bias is not third %d", q, j)
		}
	}
	for d, o := range map[string]string{
		"embeddings.token_embedding.weight":          "token_embedding.weight",
		"embeddings.position_embedding.weight":       "positional_embedding",
		"final_layer_norm.bias":                      "ln_final.bias",
		"encoder.layers.1.layer_norm2.weight":        "transformer.resblocks.1.ln_2.weight",
		"encoder.layers.0.mlp.fc1.weight":            "transformer.resblocks.0.mlp.c_fc.weight",
		"encoder.layers.0.mlp.fc2.bias":              "transformer.resblocks.0.mlp.c_proj.bias",
		"encoder.layers.1.self_attn.out_proj.weight": "transformer.resblocks.1.attn.out_proj.weight",
	} {
		b, err := m.TextEncoder.Bytes(d)
		if err != nil || !reflect.DeepEqual(b, text[o].Data) {
			t.Errorf("%s does not hold %s (%v)", d, o, err)
		}
	}
	if _, ok := m.TextEncoder.Info("encoder.layers.2.layer_norm1.weight"); ok {
		t.Error("the last resblock (unused by SD 2.x) is presented")
	}
	ignored := strings.Join(m.Ignored, " ")
	for _, want := range []string{"text_projection", "logit_scale", "resblocks.2.attn.in_proj_weight"} {
		if !strings.Contains(ignored, want) {
			t.Errorf("ignored list %v lacks %s", m.Ignored, want)
		}
	}
}

func TestOpenCLIPBad(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*safetensors.WriteTensor) bool
		want string
	}{
		{"missing final norm", func(wt *safetensors.WriteTensor) bool { return wt.Name != PrefixOpenCLIP+"ln_final.weight" },
			`missing tensor "cond_stage_model.model.ln_final.weight"`},
		{"missing fused bias", func(wt *safetensors.WriteTensor) bool {
			return wt.Name != PrefixOpenCLIP+"transformer.resblocks.0.attn.in_proj_bias"
		}, `missing tensor "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias"`},
		{"fused rows not a multiple of 3", func(wt *safetensors.WriteTensor) bool {
			if wt.Name == PrefixOpenCLIP+"transformer.resblocks.1.attn.in_proj_bias" {
				wt.Shape = []int{190}
				wt.Data = wt.Data[:190*4]
			}
			return true
		}, "fused query/key/value"},
		{"unknown key", func(wt *safetensors.WriteTensor) bool {
			if wt.Name == PrefixOpenCLIP+"transformer.resblocks.1.ln_1.bias" {
				wt.Name = PrefixOpenCLIP + "transformer.resblocks.1.ln_3.bias"
			}
			return true
		}, `unexpected text encoder tensor "cond_stage_model.model.transformer.resblocks.1.ln_3.bias"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, ref, _ := writeSD2Like(t, c.edit)
			m, err := Load(p, Options{TokenizerDir: ref.TokenizerDir})
			if err == nil {
				m.Close()
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want %q", err, c.want)
			}
		})
	}
}
