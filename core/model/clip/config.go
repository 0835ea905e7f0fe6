package clip

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
)

// Config is the architecture of a CLIP text transformer, read from a
// transformers CLIPTextConfig (text_encoder/config.json).
type Config struct {
	VocabSize             int     // vocab_size
	HiddenSize            int     // hidden_size: width of the residual stream
	IntermediateSize      int     // intermediate_size: width of the MLP
	NumHiddenLayers       int     // num_hidden_layers
	NumAttentionHeads     int     // num_attention_heads
	MaxPositionEmbeddings int     // max_position_embeddings: longest sequence (77)
	HiddenAct             string  // hidden_act: "quick_gelu" or "gelu"
	LayerNormEps          float64 // layer_norm_eps
	BOSTokenID            int     // bos_token_id
	EOSTokenID            int     // eos_token_id: where the pooled output is taken
	PadTokenID            int     // pad_token_id
	ProjectionDim         int     // projection_dim (used only by models with a projection)
	// WithProjection is set by architectures ["CLIPTextModelWithProjection"]:
	// the model holds text_projection.weight and its pooled output is
	// projected.
	WithProjection bool
}

// DefaultConfig returns transformers' CLIPTextConfig defaults, which apply
// to every field a config file leaves out.
func DefaultConfig() Config {
	return Config{
		VocabSize: 49408, HiddenSize: 512, IntermediateSize: 2048, NumHiddenLayers: 12,
		NumAttentionHeads: 8, MaxPositionEmbeddings: 77, HiddenAct: "quick_gelu", LayerNormEps: 1e-5,
		BOSTokenID: 49406, EOSTokenID: 49407, PadTokenID: 1, ProjectionDim: 512,
	}
}

// ignoredFields are keys of transformers configs that do not change the
// text encoder's inference: training settings, generation defaults and
// bookkeeping that PretrainedConfig writes into every config.json.
var ignoredFields = map[string]bool{
	"_name_or_path": true, "_commit_hash": true, "_attn_implementation_autoset": true, "_attn_implementation": true,
	"attention_dropout": true, "dropout": true, "initializer_factor": true, "initializer_range": true,
	"torch_dtype": true, "dtype": true, "transformers_version": true, "gradient_checkpointing": true,
	"add_cross_attention": true, "bad_words_ids": true, "begin_suppress_tokens": true, "chunk_size_feed_forward": true,
	"cross_attention_hidden_size": true, "decoder_start_token_id": true, "diversity_penalty": true, "do_sample": true,
	"early_stopping": true, "encoder_no_repeat_ngram_size": true, "exponential_decay_length_penalty": true,
	"finetuning_task": true, "forced_bos_token_id": true, "forced_eos_token_id": true, "id2label": true,
	"is_decoder": true, "is_encoder_decoder": true, "label2id": true, "length_penalty": true, "max_length": true,
	"min_length": true, "no_repeat_ngram_size": true, "num_beam_groups": true, "num_beams": true,
	"num_return_sequences": true, "output_attentions": true, "output_hidden_states": true, "output_scores": true,
	"prefix": true, "problem_type": true, "pruned_heads": true, "remove_invalid_values": true,
	"repetition_penalty": true, "return_dict": true, "return_dict_in_generate": true, "sep_token_id": true,
	"suppress_tokens": true, "task_specific_params": true, "temperature": true, "tf_legacy_loss": true,
	"tie_encoder_decoder": true, "tie_word_embeddings": true, "tokenizer_class": true, "top_k": true, "top_p": true,
	"torchscript": true, "typical_p": true, "use_bfloat16": true, "use_cache": true,
}

// ParseConfig reads a transformers CLIPTextConfig. Fields it does not know
// are an error naming the field, as are values of the wrong type and an
// architecture or activation this package does not implement.
func ParseConfig(data []byte) (Config, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return Config{}, fmt.Errorf("clip: config: %w", err)
	}
	if fields == nil {
		return Config{}, fmt.Errorf("clip: config: want a JSON object")
	}
	cfg := DefaultConfig()
	ints := map[string]*int{
		"vocab_size": &cfg.VocabSize, "hidden_size": &cfg.HiddenSize, "intermediate_size": &cfg.IntermediateSize,
		"num_hidden_layers": &cfg.NumHiddenLayers, "num_attention_heads": &cfg.NumAttentionHeads,
		"max_position_embeddings": &cfg.MaxPositionEmbeddings, "bos_token_id": &cfg.BOSTokenID,
		"eos_token_id": &cfg.EOSTokenID, "pad_token_id": &cfg.PadTokenID, "projection_dim": &cfg.ProjectionDim,
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		raw := fields[key]
		if dst, ok := ints[key]; ok {
			if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) && (key == "pad_token_id" || key == "bos_token_id") {
				*dst = -1 // an absent special token; not used by the computation
				continue
			}
			if err := json.Unmarshal(raw, dst); err != nil {
				return Config{}, fmt.Errorf("clip: config: %s: want an integer, got %s", key, raw)
			}
			continue
		}
		switch key {
		case "hidden_act":
			if err := json.Unmarshal(raw, &cfg.HiddenAct); err != nil {
				return Config{}, fmt.Errorf("clip: config: hidden_act: want a string, got %s", raw)
			}
		case "layer_norm_eps":
			if err := json.Unmarshal(raw, &cfg.LayerNormEps); err != nil {
				return Config{}, fmt.Errorf("clip: config: layer_norm_eps: want a number, got %s", raw)
			}
		case "model_type":
			var mt string
			if err := json.Unmarshal(raw, &mt); err != nil || mt != "clip_text_model" {
				return Config{}, fmt.Errorf("clip: config: model_type %s: want \"clip_text_model\"", raw)
			}
		case "architectures":
			var archs []string
			if err := json.Unmarshal(raw, &archs); err != nil {
				return Config{}, fmt.Errorf("clip: config: architectures: want a list of strings, got %s", raw)
			}
			for _, a := range archs {
				if a != "CLIPTextModel" && a != "CLIPTextModelWithProjection" {
					return Config{}, fmt.Errorf("clip: config: architectures: %q is not a CLIP text model", a)
				}
			}
			if len(archs) > 1 {
				return Config{}, fmt.Errorf("clip: config: architectures: %d entries, want one", len(archs))
			}
			cfg.WithProjection = len(archs) == 1 && archs[0] == "CLIPTextModelWithProjection"
		default:
			if !ignoredFields[key] {
				return Config{}, fmt.Errorf("clip: config: unknown field %q", key)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Validate checks that the configuration describes a model this package
// can build, naming the first offending field.
func (c Config) Validate() error {
	positive := []struct {
		name string
		v    int
	}{
		{"vocab_size", c.VocabSize}, {"hidden_size", c.HiddenSize}, {"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", c.NumHiddenLayers}, {"num_attention_heads", c.NumAttentionHeads},
		{"max_position_embeddings", c.MaxPositionEmbeddings},
	}
	for _, f := range positive {
		if f.v <= 0 || f.v > 1<<24 {
			return fmt.Errorf("clip: config: %s = %d: want a positive size", f.name, f.v)
		}
	}
	if c.HiddenSize%c.NumAttentionHeads != 0 {
		return fmt.Errorf("clip: config: hidden_size %d is not divisible by num_attention_heads %d", c.HiddenSize, c.NumAttentionHeads)
	}
	if c.HiddenAct != "quick_gelu" && c.HiddenAct != "gelu" {
		return fmt.Errorf("clip: config: hidden_act %q is not supported (want \"quick_gelu\" or \"gelu\")", c.HiddenAct)
	}
	if !(c.LayerNormEps > 0 && c.LayerNormEps < 1) {
		return fmt.Errorf("clip: config: layer_norm_eps = %v: want a small positive number", c.LayerNormEps)
	}
	if c.WithProjection && (c.ProjectionDim <= 0 || c.ProjectionDim > 1<<24) {
		return fmt.Errorf("clip: config: projection_dim = %d: want a positive size", c.ProjectionDim)
	}
	if c.EOSTokenID < 0 || c.EOSTokenID >= c.VocabSize {
		return fmt.Errorf("clip: config: eos_token_id %d is outside the vocabulary (vocab_size %d)", c.EOSTokenID, c.VocabSize)
	}
	return nil
}

// HeadDim returns the width of one attention head.
func (c Config) HeadDim() int { return c.HiddenSize / c.NumAttentionHeads }
