package checkpoint

import (
	"fmt"
	"strings"

	"github.com/kiln-project/kiln/core/safetensors"
)

// openCLIPIgnored are OpenCLIP text tower tensors that the SD 2.x text
// conditioning does not use.
var openCLIPIgnored = map[string]bool{"text_projection": true, "logit_scale": true, "attn_mask": true}

// OpenCLIPToDiffusers maps the SD 2.x OpenCLIP text encoder keys (without
// "cond_stage_model.model.") to CLIPTextModel names without "text_model.".
// The fused attention projection in_proj_weight/in_proj_bias (3·D rows)
// becomes three views (q, k, v) over its row thirds. SD 2.x conditions on
// the penultimate layer, so the last of the file's resblocks is dropped,
// as is the CLIP projection; dropped keys are returned in ignored.
func OpenCLIPToDiffusers(src safetensors.Source, prefix string, keys []string) (entries map[string]safetensors.ViewEntry, ignored []string, err error) {
	return openCLIPEntries(src, prefix, keys, false)
}

// openCLIPEntries is OpenCLIPToDiffusers; keepLast keeps the last resblock
// (SDXL uses every layer's output up to the penultimate, and the last
// layer for the pooled output).
func openCLIPEntries(src safetensors.Source, prefix string, keys []string, keepLast bool) (entries map[string]safetensors.ViewEntry, ignored []string, err error) {
	blocks := 0
	for _, k := range keys {
		if i, ok := indexAfter(k, "transformer.resblocks."); ok && i+1 > blocks && i < 4096 {
			blocks = i + 1
		}
	}
	if blocks < 2 {
		return nil, nil, fmt.Errorf("checkpoint: OpenCLIP text encoder with %d resblocks", blocks)
	}
	entries = map[string]safetensors.ViewEntry{}
	put := func(name string, e safetensors.ViewEntry) error {
		if prev, dup := entries[name]; dup {
			return fmt.Errorf("checkpoint: text encoder holds both %q and %q", prev.From, e.From)
		}
		entries[name] = e
		return nil
	}
	simple := map[string]string{
		"token_embedding.weight": "embeddings.token_embedding.weight",
		"positional_embedding":   "embeddings.position_embedding.weight",
		"ln_final.weight":        "final_layer_norm.weight",
		"ln_final.bias":          "final_layer_norm.bias",
	}
	inner := [][2]string{
		{"ln_1", "layer_norm1"}, {"ln_2", "layer_norm2"}, {"attn.out_proj", "self_attn.out_proj"},
		{"mlp.c_fc", "mlp.fc1"}, {"mlp.c_proj", "mlp.fc2"},
	}
	for _, k := range keys {
		full := prefix + k
		if d, ok := simple[k]; ok {
			if err := put(d, safetensors.ViewEntry{From: full}); err != nil {
				return nil, nil, err
			}
			continue
		}
		if openCLIPIgnored[k] {
			ignored = append(ignored, full)
			continue
		}
		rest, ok := strings.CutPrefix(k, "transformer.resblocks.")
		i, param, ok2 := splitIndex(rest)
		if !ok || !ok2 {
			return nil, nil, fmt.Errorf("checkpoint: unexpected text encoder tensor %q", full)
		}
		if i == blocks-1 && !keepLast {
			ignored = append(ignored, full)
			continue
		}
		layer := "encoder.layers." + itoa(i) + "."
		if r, ok := renameInner(param, inner, false); ok {
			if err := put(layer+r, safetensors.ViewEntry{From: full}); err != nil {
				return nil, nil, err
			}
			continue
		}
		if param != "attn.in_proj_weight" && param != "attn.in_proj_bias" {
			return nil, nil, fmt.Errorf("checkpoint: unexpected text encoder tensor %q", full)
		}
		info, _ := src.Info(full)
		if len(info.Shape) == 0 || info.Shape[0]%3 != 0 || info.Shape[0] == 0 {
			return nil, nil, &TensorError{What: "text_encoder", Name: full, Problem: fmt.Sprintf("has shape %v, want 3·D rows of fused query/key/value", info.Shape)}
		}
		d := info.Shape[0] / 3
		leaf := "weight"
		if param == "attn.in_proj_bias" {
			leaf = "bias"
		}
		for j, q := range []string{"q_proj", "k_proj", "v_proj"} {
			if err := put(layer+"self_attn."+q+"."+leaf, safetensors.ViewEntry{From: full, RowStart: j * d, RowEnd: (j + 1) * d}); err != nil {
				return nil, nil, err
			}
		}
	}
	return entries, ignored, nil
}

// openCLIPOriginal names the OpenCLIP key a text encoder tensor comes
// from (for messages about missing tensors).
func openCLIPOriginal(name string) (string, bool) {
	for o, d := range map[string]string{
		"token_embedding.weight": "embeddings.token_embedding.weight",
		"positional_embedding":   "embeddings.position_embedding.weight",
		"ln_final.weight":        "final_layer_norm.weight",
		"ln_final.bias":          "final_layer_norm.bias",
	} {
		if d == name {
			return o, true
		}
	}
	rest, ok := strings.CutPrefix(name, "encoder.layers.")
	i, param, ok2 := splitIndex(rest)
	if !ok || !ok2 {
		return "", false
	}
	p := "transformer.resblocks." + itoa(i) + "."
	for _, q := range []string{"q_proj", "k_proj", "v_proj"} {
		if leaf, ok := strings.CutPrefix(param, "self_attn."+q+"."); ok {
			return p + "attn.in_proj_" + leaf, true
		}
	}
	if r, ok := renameInner(param, [][2]string{{"ln_1", "layer_norm1"}, {"ln_2", "layer_norm2"}, {"attn.out_proj", "self_attn.out_proj"}, {"mlp.c_fc", "mlp.fc1"}, {"mlp.c_proj", "mlp.fc2"}}, true); ok {
		return p + r, true
	}
	return "", false
}
