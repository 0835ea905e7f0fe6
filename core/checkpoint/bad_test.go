package checkpoint

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// writeFixtureSingle writes the fixture model as one original-layout file
// with its configs embedded, and returns the path and the file's tensors.
func writeFixtureSingle(t *testing.T) (string, *Model) {
	t.Helper()
	m := loadFixture(t)
	p := filepath.Join(t.TempDir(), "model.safetensors")
	if err := WriteSingleFile(p, m, WriteOptions{EmbedConfigs: true}); err != nil {
		t.Fatal(err)
	}
	return p, m
}

// rewrite copies the tensors of the file at src to a new file, letting
// edit drop (nil) or replace each one, with the given metadata.
func rewrite(t *testing.T, src string, md map[string]string, edit func(safetensors.WriteTensor) *safetensors.WriteTensor) string {
	t.Helper()
	f, err := safetensors.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if md == nil {
		md = f.Metadata()
	}
	var out []safetensors.WriteTensor
	for _, n := range f.Names() {
		wt, err := safetensors.FromSource(f, n, n)
		if err != nil {
			t.Fatal(err)
		}
		if e := edit(wt); e != nil {
			out = append(out, *e)
		}
	}
	p := filepath.Join(t.TempDir(), "edited.safetensors")
	if err := safetensors.WriteFile(p, out, md); err != nil {
		t.Fatal(err)
	}
	return p
}

func keep(wt safetensors.WriteTensor) *safetensors.WriteTensor { return &wt }

func TestEmbeddedConfigsRoundTrip(t *testing.T) {
	p, m := writeFixtureSingle(t)
	back, err := Load(p, Options{TokenizerDir: m.TokenizerDir})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if string(back.UNetConfig) != string(m.UNetConfig) || string(back.TextEncoderConfig) != string(m.TextEncoderConfig) {
		t.Fatal("embedded configs not used verbatim")
	}
	sameTensors(t, "unet", back.UNet, m.UNet)
}

func TestBadSingleFiles(t *testing.T) {
	p, m := writeFixtureSingle(t)
	tok := Options{TokenizerDir: m.TokenizerDir}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(t.TempDir(), "truncated.safetensors")
	if err := os.WriteFile(truncated, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	headerOnly := filepath.Join(t.TempDir(), "header.safetensors")
	os.WriteFile(headerOnly, data[:100], 0o644)
	pickle := filepath.Join(t.TempDir(), "model.ckpt")
	os.WriteFile(pickle, []byte("PK\x03\x04"), 0o644)

	withConfig := func(key string, edit func(map[string]any)) map[string]string {
		f, _ := safetensors.Open(p)
		defer f.Close()
		md := f.Metadata()
		var cfg map[string]any
		json.Unmarshal([]byte(md[key]), &cfg)
		edit(cfg)
		js, _ := json.Marshal(cfg)
		md[key] = string(js)
		return md
	}
	drop := func(name string) func(safetensors.WriteTensor) *safetensors.WriteTensor {
		return func(wt safetensors.WriteTensor) *safetensors.WriteTensor {
			if wt.Name == name {
				return nil
			}
			return &wt
		}
	}
	reshape := func(name string, shape []int) func(safetensors.WriteTensor) *safetensors.WriteTensor {
		return func(wt safetensors.WriteTensor) *safetensors.WriteTensor {
			if wt.Name == name {
				wt.Shape = shape
			}
			return &wt
		}
	}
	// A damaged file reports its damage, also without a tokenizer folder
	// (the embedded vocabulary no longer hides it behind a tokenizer error).
	for _, c := range [][2]string{{truncated, "out of bounds"}, {headerOnly, "beyond the end of the file"}} {
		if _, err := Load(c[0], Options{}); err == nil || !strings.Contains(err.Error(), c[1]) {
			t.Errorf("%s without options: %v, want %q", c[0], err, c[1])
		}
	}
	cases := []struct {
		name, path, want string
	}{
		{"truncated file", truncated, "out of bounds"},
		{"header only", headerOnly, "beyond the end of the file"},
		{"pickle", pickle, "pickle"},
		{"missing resnet shortcut", rewrite(t, p, nil, drop("model.diffusion_model.input_blocks.4.0.skip_connection.weight")),
			`missing tensor "model.diffusion_model.input_blocks.4.0.skip_connection.weight"`},
		{"missing VAE attention", rewrite(t, p, nil, drop("first_stage_model.decoder.mid.attn_1.k.bias")),
			`missing tensor "first_stage_model.decoder.mid.attn_1.k.bias"`},
		{"missing text layer norm", rewrite(t, p, nil, drop("cond_stage_model.transformer.text_model.final_layer_norm.weight")),
			`missing tensor "cond_stage_model.transformer.text_model.final_layer_norm.weight"`},
		{"unexpected UNet tensor", rewrite(t, p, nil, func(wt safetensors.WriteTensor) *safetensors.WriteTensor {
			if wt.Name == "model.diffusion_model.out.2.bias" {
				wt.Name = "model.diffusion_model.out.3.bias"
			}
			return &wt
		}), `unexpected UNet tensor "model.diffusion_model.out.3.bias"`},
		{"unexpected extra block", rewrite(t, p, nil, func(wt safetensors.WriteTensor) *safetensors.WriteTensor {
			if wt.Name == "model.diffusion_model.input_blocks.1.0.in_layers.0.bias" {
				wt.Name = "model.diffusion_model.input_blocks.1.0.emb_layers.1.weight_extra.bias"
			}
			return &wt
		}), "unexpected UNet tensor"},
		{"wrong shape", rewrite(t, p, nil, reshape("model.diffusion_model.out.2.weight", []int{4, 32, 9, 1})),
			`tensor "model.diffusion_model.out.2.weight" has shape [4 32 9 1], the config needs [4 32 3 3]`},
		{"wrong VAE attention shape", rewrite(t, p, nil, reshape("first_stage_model.encoder.mid.attn_1.q.weight", []int{64, 64, 1, 1, 1})),
			"attention weight"},
		{"unknown block type in config", rewrite(t, p, withConfig(MetaUNetConfig, func(c map[string]any) {
			c["down_block_types"] = []string{"DownBlock2D", "SimpleCrossAttnDownBlock2D"}
		}), keep), `down_block_types[1]: unsupported block type "SimpleCrossAttnDownBlock2D"`},
		{"unsupported architecture field", rewrite(t, p, withConfig(MetaUNetConfig, func(c map[string]any) {
			c["addition_embed_type"] = "text"
		}), keep), `addition_embed_type = "text" is not supported`},
		{"text_time without its width", rewrite(t, p, withConfig(MetaUNetConfig, func(c map[string]any) {
			c["addition_embed_type"] = "text_time"
		}), keep), `missing "projection_class_embeddings_input_dim"`},
		{"config disagrees with tensors", rewrite(t, p, withConfig(MetaUNetConfig, func(c map[string]any) {
			c["block_out_channels"] = []int{32, 96}
		}), keep), "has shape"},
		{"text config class", rewrite(t, p, withConfig(MetaTextEncoderConfig, func(c map[string]any) {
			c["architectures"] = []string{"CLIPVisionModel"}
		}), keep), "only CLIPTextModel"},
		{"projection config without the tensor", rewrite(t, p, withConfig(MetaTextEncoderConfig, func(c map[string]any) {
			c["architectures"] = []string{"CLIPTextModelWithProjection"}
		}), keep), "missing tensor \"cond_stage_model.transformer.text_model.text_projection.weight\""},
		{"two text encoders", rewrite(t, p, nil, func(wt safetensors.WriteTensor) *safetensors.WriteTensor {
			if wt.Name == PrefixCLIP+"text_model.final_layer_norm.bias" {
				wt.Name = PrefixOpenCLIP + "ln_final.bias"
			}
			return &wt
		}), "two text encoders"},
		{"no UNet", rewrite(t, p, nil, func(wt safetensors.WriteTensor) *safetensors.WriteTensor {
			if strings.HasPrefix(wt.Name, PrefixUNet) {
				return nil
			}
			return &wt
		}), "not an original-layout Stable Diffusion checkpoint"},
		{"no VAE", rewrite(t, p, nil, func(wt safetensors.WriteTensor) *safetensors.WriteTensor {
			if strings.HasPrefix(wt.Name, PrefixVAE) {
				return nil
			}
			return &wt
		}), "carries no VAE"},
		{"integer weights", rewrite(t, p, nil, func(wt safetensors.WriteTensor) *safetensors.WriteTensor {
			if wt.Name == "model.diffusion_model.out.2.bias" {
				wt.DType = "I32"
			}
			return &wt
		}), "dtype I32"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Load(c.path, tok)
			if err == nil {
				got.Close()
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
	md := withConfig(MetaUNetConfig, func(map[string]any) {})
	delete(md, MetaPrediction)
	md["modelspec.prediction_type"] = "x-pred"
	if _, err := Load(rewrite(t, p, md, keep), tok); err == nil || !strings.Contains(err.Error(), "x-pred") {
		t.Fatalf("unknown prediction type: %v", err)
	}
	if _, err := Load(p, Options{TokenizerDir: m.TokenizerDir, Prediction: "sample"}); err == nil {
		t.Fatal("unknown prediction option accepted")
	}
}

// TestEveryTensorRequired removes each tensor of the fixture model in turn
// (original layout, shapes only) and checks that loading fails, naming the
// removed tensor, without a panic; then changes each tensor's shape.
func TestEveryTensorRequired(t *testing.T) {
	m := loadFixture(t)
	unetL, _ := ParseUNetLayout(m.UNetConfig)
	vaeL, _ := ParseVAELayout(m.VAEConfig)
	textL, _ := ParseTextLayout(m.TextEncoderConfig)
	full := originalSource(t, unetL, vaeL, textL)
	opts := Options{TokenizerDir: m.TokenizerDir, TextEncoderConfig: m.TextEncoderConfig}
	if _, err := FromOriginal(full, nil, opts); err != nil {
		t.Fatal(err)
	}
	i := 0
	for name, shape := range full {
		if strings.HasSuffix(name, "position_ids") {
			continue
		}
		i++
		delete(full, name)
		_, err := FromOriginal(full, nil, opts)
		full[name] = shape
		if err == nil {
			t.Fatalf("loaded without %s", name)
		}
		if !strings.Contains(err.Error(), name) {
			t.Errorf("without %s: error %q does not name it", name, err)
		}
		if i%4 != 0 {
			continue // reshaping a quarter of them keeps the test fast
		}
		full[name] = append(append([]int(nil), shape...), 2)
		_, err2 := FromOriginal(full, nil, opts)
		full[name] = shape
		if err2 == nil {
			t.Fatalf("loaded with %s reshaped", name)
		}
	}
}

func TestBadDiffusersFolders(t *testing.T) {
	src := fixtures.Require(t, "sd15-tiny/model")
	type edit func(t *testing.T, dir string)
	writeJSON := func(rel string, change func(map[string]any)) edit {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, rel)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			json.Unmarshal(b, &m)
			change(m)
			b, _ = json.Marshal(m)
			os.Remove(p)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []struct {
		name string
		edit edit
		want string
	}{
		{"no model_index", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "model_index.json")) }, "not a diffusers folder"},
		{"unknown pipeline", writeJSON("model_index.json", func(m map[string]any) { m["_class_name"] = "FluxPipeline" }), `pipeline "FluxPipeline" is not supported`},
		{"SD folder called SDXL", writeJSON("model_index.json", func(m map[string]any) { m["_class_name"] = "StableDiffusionXLPipeline" }), `component "text_encoder_2" missing`},
		{"unknown component class", writeJSON("model_index.json", func(m map[string]any) { m["unet"] = []string{"diffusers", "UNet2DModel"} }), "only diffusers.UNet2DConditionModel"},
		{"unknown unet block", writeJSON("unet/config.json", func(m map[string]any) { m["up_block_types"] = []string{"CrossAttnUpBlock2D", "AttnUpBlock2D"} }), `unsupported block type "AttnUpBlock2D"`},
		{"unsupported unet field", writeJSON("unet/config.json", func(m map[string]any) { m["class_embed_type"] = "timestep" }), "class_embed_type"},
		{"config disagrees", writeJSON("unet/config.json", func(m map[string]any) { m["layers_per_block"] = 1 }), "the config needs"},
		{"vae class", writeJSON("vae/config.json", func(m map[string]any) { m["_class_name"] = "AutoencoderTiny" }), "AutoencoderTiny"},
		{"bad config JSON", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "vae/config.json"))
			os.WriteFile(filepath.Join(dir, "vae/config.json"), []byte("{"), 0o644)
		}, "vae config"},
		{"no tokenizer", func(t *testing.T, dir string) { os.RemoveAll(filepath.Join(dir, "tokenizer")) }, "tokenizer"},
		{"no weights", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "vae/diffusion_pytorch_model.safetensors"))
		}, "no diffusion_pytorch_model.safetensors"},
		{"pickle weights", func(t *testing.T, dir string) {
			os.Rename(filepath.Join(dir, "vae/diffusion_pytorch_model.safetensors"), filepath.Join(dir, "vae/diffusion_pytorch_model.bin"))
		}, "pickle"},
		{"truncated weights", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "unet/diffusion_pytorch_model.safetensors")
			b, _ := os.ReadFile(p)
			os.Remove(p)
			os.WriteFile(p, b[:len(b)-1000], 0o644)
		}, "out of bounds"},
		{"missing tensor", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "text_encoder/model.safetensors")
			q := rewrite(t, p, nil, func(wt safetensors.WriteTensor) *safetensors.WriteTensor {
				if wt.Name == "encoder.layers.2.mlp.fc1.bias" {
					return nil
				}
				return &wt
			})
			os.Remove(p)
			os.Rename(q, p)
		}, `missing tensor "encoder.layers.2.mlp.fc1.bias"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyTree(t, src)
			c.edit(t, dir)
			m, err := Load(dir, Options{})
			if err == nil {
				m.Close()
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

// copyTree copies a folder of small files into a temporary folder.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}
