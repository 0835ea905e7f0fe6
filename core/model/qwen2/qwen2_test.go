package qwen2

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/model/qwenimage/qitest"
	"github.com/kiln-project/kiln/core/safetensors"
)

// open loads the text model of a fixture folder.
func open(t *testing.T, dir string) *Model {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	src, err := safetensors.OpenIndex(filepath.Join(dir, "model.safetensors.index.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	lm, err := LanguageModel(src)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cpu.New(), cfg, lm)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestHiddenStatesMatchTransformers: a right-padded batch through the
// second fixture config (3 heads, 1 KV head, 3 layers) gives
// transformers' hidden_states[-1] for every unpadded token.
func TestHiddenStatesMatchTransformers(t *testing.T) {
	refs := qitest.Refs(t)
	m := open(t, filepath.Join(qitest.Dir(), "te_b"))
	idsF, shape := qitest.Tensor(t, refs, "te_b.ids")
	maskF, _ := qitest.Tensor(t, refs, "te_b.mask")
	want, _ := qitest.Tensor(t, refs, "te_b.hidden_last")
	B, L, D := shape[0], shape[1], m.Config().HiddenSize
	var ids [][]int32
	for b := range B {
		var s []int32
		for i := range L {
			if maskF[b*L+i] != 0 {
				s = append(s, int32(idsF[b*L+i]))
			}
		}
		ids = append(ids, s)
	}
	out, err := m.Forward(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	for b := range B {
		n := len(ids[b])
		qitest.Check(t, "hidden row", out[b], want[b*L*D:(b*L+n)*D], 1e-4)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, js := range map[string]string{
		"gelu":    `{"hidden_act":"gelu","vocab_size":4,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"rms_norm_eps":1e-6}`,
		"heads":   `{"hidden_act":"silu","vocab_size":4,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":3,"rms_norm_eps":1e-6}`,
		"kv":      `{"hidden_act":"silu","vocab_size":4,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":3,"rms_norm_eps":1e-6}`,
		"sliding": `{"hidden_act":"silu","use_sliding_window":true,"vocab_size":4,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"rms_norm_eps":1e-6}`,
		"yarn":    `{"text_config":{"hidden_act":"silu","vocab_size":4,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"rms_norm_eps":1e-6,"rope_parameters":{"rope_type":"yarn"}}}`,
		"json":    `[`,
	} {
		if _, err := ParseConfig([]byte(js)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
