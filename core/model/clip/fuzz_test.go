package clip

import "testing"

// FuzzParseConfig: any config.json parses into a config that passes its
// own checks, or fails with an error naming the problem; never a panic.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"architectures": ["CLIPTextModel"], "hidden_act": "gelu", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}`))
	f.Add([]byte(`{"hidden_size": 30, "num_attention_heads": 4}`))
	f.Add([]byte(`{"num_hidden_layers": 1e100}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if cfg.NumAttentionHeads <= 0 || cfg.HiddenSize%cfg.NumAttentionHeads != 0 || cfg.NumHiddenLayers <= 0 {
			t.Fatalf("accepted %+v", cfg)
		}
	})
}
