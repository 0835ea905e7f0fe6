package unet

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
)

func readConfig(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPublishedArchitectures derives the SD 1.5 and SD 2.1 UNets from their
// config files and checks the parameter counts those models are known to
// have, which pins every layer's shape.
func TestPublishedArchitectures(t *testing.T) {
	for _, tc := range []struct {
		file    string
		params  int64
		heads   []int
		linear  bool
		context int
	}{
		{"testdata/sd15_config.json", 859_520_964, []int{8, 8, 8, 8}, false, 768},
		{"testdata/sd21_config.json", 865_910_724, []int{5, 10, 20, 20}, true, 1024},
		// SDXL 1.0 base (its published config, upcast_attention null).
		{"../modeltest/configs/sdxl_unet.json", 2_567_463_684, []int{5, 10, 20}, true, 2048},
		// The refiner: parameters not pinned here, 5 time ids of 256 beside a 1280-wide pooled embedding.
		{"../modeltest/configs/sdxl_refiner_unet.json", 0, []int{6, 12, 24, 24}, true, 1280},
	} {
		t.Run(tc.file, func(t *testing.T) {
			cfg, err := ParseConfig(readConfig(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Heads, tc.heads) || cfg.UseLinearProjection != tc.linear || cfg.ContextDim() != tc.context {
				t.Fatalf("heads %v linear %v context %d", cfg.Heads, cfg.UseLinearProjection, cfg.ContextDim())
			}
			infos, err := ExpectedTensors(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var n int64
			for _, in := range infos {
				n += int64(in.Numel())
			}
			if tc.params != 0 && n != tc.params {
				t.Fatalf("%d parameters, want %d", n, tc.params)
			}
			t.Logf("%d parameters", n)
			if cfg.AdditionEmbedType != "" {
				ids, err := cfg.TimeIDCount(1280)
				want := 6
				if cfg.ContextDim() == 1280 {
					want = 5
				}
				if err != nil || ids != want {
					t.Fatalf("time ids %d, %v; want %d", ids, err, want)
				}
			}
		})
	}
}

// mutate returns the SD 1.5 config with field set to the JSON value v
// (deleted when v is "").
func mutate(t *testing.T, field, v string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(readConfig(t, "testdata/sd15_config.json"), &m); err != nil {
		t.Fatal(err)
	}
	if v == "" {
		delete(m, field)
	} else {
		m[field] = json.RawMessage(v)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConfigRejects(t *testing.T) {
	for _, tc := range []struct{ field, value, errField string }{
		{"no_such_field", "1", "no_such_field"},
		{"_class_name", `"UNet2DModel"`, "_class_name"},
		{"addition_embed_type", `"text"`, "addition_embed_type"},
		// text_time needs its widths.
		{"addition_embed_type", `"text_time"`, "addition_time_embed_dim"},
		{"class_embed_type", `"timestep"`, "class_embed_type"},
		{"num_class_embeds", "10", "num_class_embeds"},
		{"encoder_hid_dim", "768", "encoder_hid_dim"},
		{"encoder_hid_dim_type", `"text_proj"`, "encoder_hid_dim_type"},
		{"time_cond_proj_dim", "256", "time_cond_proj_dim"},
		{"timestep_post_act", `"silu"`, "timestep_post_act"},
		{"time_embedding_act_fn", `"silu"`, "time_embedding_act_fn"},
		{"time_embedding_type", `"fourier"`, "time_embedding_type"},
		{"resnet_time_scale_shift", `"scale_shift"`, "resnet_time_scale_shift"},
		{"conv_in_kernel", "7", "conv_in_kernel"},
		{"conv_out_kernel", "1", "conv_out_kernel"},
		{"attention_type", `"gated"`, "attention_type"},
		{"dual_cross_attention", "true", "dual_cross_attention"},
		{"only_cross_attention", "true", "only_cross_attention"},
		{"only_cross_attention", "[false, true, false, false]", "only_cross_attention"},
		{"center_input_sample", "true", "center_input_sample"},
		{"resnet_out_scale_factor", "2.0", "resnet_out_scale_factor"},
		{"mid_block_scale_factor", "1.5", "mid_block_scale_factor"},
		{"reverse_transformer_layers_per_block", "[[1], [1], [1], [1]]", "reverse_transformer_layers_per_block"},
		{"mid_block_type", `"UNetMidBlock2DSimpleCrossAttn"`, "mid_block_type"},
		{"down_block_types", `["SimpleCrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]`, "down_block_types"},
		{"up_block_types", `["UpBlock2D", "CrossAttnUpBlock2D"]`, "up_block_types"},
		{"act_fn", `"gelu"`, "act_fn"},
		{"attention_head_dim", "[8, 8]", "attention_head_dim"},
		{"attention_head_dim", "7", "attention_head_dim"},
		{"cross_attention_dim", "[768, 768, 1024, 768]", "cross_attention_dim"},
		{"layers_per_block", "0", "layers_per_block"},
		{"layers_per_block", "100000", "layers_per_block"},
		{"transformer_layers_per_block", `"2"`, "transformer_layers_per_block"},
		{"norm_num_groups", "0", "norm_num_groups"},
		{"norm_num_groups", "null", "norm_num_groups"},
		{"block_out_channels", "[320, 640, 1280, 1000]", "block_out_channels"},
		{"downsample_padding", "2", "downsample_padding"},
		{"in_channels", "4.5", "in_channels"},
	} {
		_, err := ParseConfig(mutate(t, tc.field, tc.value))
		if err == nil {
			t.Errorf("%s = %s: accepted", tc.field, tc.value)
			continue
		}
		if !strings.Contains(err.Error(), `"`+tc.errField+`"`) {
			t.Errorf("%s = %s: error %q does not name %q", tc.field, tc.value, err, tc.errField)
		}
	}
}

func TestConfigAccepts(t *testing.T) {
	for _, tc := range []struct {
		field, value string
		check        func(Config) bool
	}{
		// Defaults and no-op values of rejected features are fine.
		{"only_cross_attention", "[false, false, false, false]", func(c Config) bool { return true }},
		{"resnet_out_scale_factor", "1.0", func(c Config) bool { return true }},
		{"attention_type", `"default"`, func(c Config) bool { return true }},
		{"addition_embed_type_num_heads", "64", func(c Config) bool { return true }},
		{"mid_block_only_cross_attention", "null", func(c Config) bool { return true }},
		{"dropout", "0.1", func(c Config) bool { return true }},
		// num_attention_heads, when set, wins over attention_head_dim.
		{"num_attention_heads", "[5, 10, 20, 20]", func(c Config) bool { return slices.Equal(c.Heads, []int{5, 10, 20, 20}) }},
		{"transformer_layers_per_block", "[1, 2, 3, 1]", func(c Config) bool { return slices.Equal(c.TransformerLayers, []int{1, 2, 3, 1}) }},
		{"layers_per_block", "[1, 2, 3, 1]", func(c Config) bool { return slices.Equal(c.LayersPerBlock, []int{1, 2, 3, 1}) }},
		{"time_embedding_dim", "640", func(c Config) bool { return c.TimeEmbedDim == 640 }},
		{"time_embedding_dim", "null", func(c Config) bool { return c.TimeEmbedDim == 1280 }},
		{"mid_block_type", "null", func(c Config) bool { return c.MidBlockType == "" }},
		{"mid_block_type", "", func(c Config) bool { return c.MidBlockType == UNetMidBlock2DCrossAttn }},
		{"act_fn", `"swish"`, func(c Config) bool { return true }},
		{"freq_shift", "1", func(c Config) bool { return c.FreqShift == 1 }},
	} {
		cfg, err := ParseConfig(mutate(t, tc.field, tc.value))
		if err != nil {
			t.Errorf("%s = %s: %v", tc.field, tc.value, err)
			continue
		}
		if !tc.check(cfg) {
			t.Errorf("%s = %s: parsed %+v", tc.field, tc.value, cfg)
		}
		if _, err := ExpectedTensors(cfg); err != nil {
			t.Errorf("%s = %s: %v", tc.field, tc.value, err)
		}
	}
}

func TestConfigMalformedJSON(t *testing.T) {
	for _, s := range []string{"", "[]", "null", "{", `{"in_channels": 4} {}`, `{"block_out_channels": "320"}`} {
		if _, err := ParseConfig([]byte(s)); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

// FuzzParseConfig checks that no config makes ParseConfig or the
// architecture derivation panic.
func FuzzParseConfig(f *testing.F) {
	for _, p := range []string{"testdata/sd15_config.json", "testdata/sd21_config.json"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 8, "cross_attention_dim": 32}`))
	f.Add([]byte(`{"mid_block_type": null, "layers_per_block": [1, 1, 1, 1], "transformer_layers_per_block": 2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if _, err := ExpectedTensors(cfg); err != nil {
			t.Fatalf("ParseConfig accepted a config that ExpectedTensors refuses: %v", err)
		}
	})
}
