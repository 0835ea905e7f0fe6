package checkpoint

import (
	"fmt"
	"strconv"
	"strings"
)

// Key prefixes of the original (CompVis/LDM) single-file layout.
const (
	// PrefixUNet starts the UNet's keys.
	PrefixUNet = "model.diffusion_model."
	// PrefixVAE starts the autoencoder's keys.
	PrefixVAE = "first_stage_model."
	// PrefixCLIP starts the SD 1.x CLIP text encoder's keys (a transformers
	// CLIPTextModel state dict).
	PrefixCLIP = "cond_stage_model.transformer."
	// PrefixOpenCLIP starts the SD 2.x OpenCLIP text tower's keys.
	PrefixOpenCLIP = "cond_stage_model.model."
)

// Layout carries the few structural facts the name mapping needs that the
// names alone do not settle.
type Layout struct {
	// UNetLayersPerBlock is the number of resnets per UNet down level.
	UNetLayersPerBlock int
	// UNetUpAttention tells, per UNet up level (deepest first), whether it
	// has attention; needed only for diffusers → original names.
	UNetUpAttention []bool
	// VAELevels is the number of VAE resolution levels (the original
	// decoder numbers its levels in the opposite order).
	VAELevels int
}

// resnetOrigToDiff maps the inner module names of an original UNet
// ResBlock to the diffusers ResnetBlock2D ones.
var resnetOrigToDiff = [][2]string{
	{"in_layers.0", "norm1"},
	{"in_layers.2", "conv1"},
	{"emb_layers.1", "time_emb_proj"},
	{"out_layers.0", "norm2"},
	{"out_layers.3", "conv2"},
	{"skip_connection", "conv_shortcut"},
}

// vaeAttnOrigToDiff maps the original VAE AttnBlock modules to diffusers'
// Attention modules; q, k, v and proj_out are 1×1 convolutions in the
// original and linear layers in diffusers.
var vaeAttnOrigToDiff = [][2]string{
	{"norm", "group_norm"},
	{"q", "to_q"},
	{"k", "to_k"},
	{"v", "to_v"},
	{"proj_out", "to_out.0"},
}

// renameInner replaces the leading module path of rest by the table entry
// whose from-side matches, requiring the remainder to be weight or bias.
func renameInner(rest string, table [][2]string, reverse bool) (string, bool) {
	for _, e := range table {
		from, to := e[0], e[1]
		if reverse {
			from, to = to, from
		}
		if leaf, ok := strings.CutPrefix(rest, from+"."); ok && (leaf == "weight" || leaf == "bias") {
			return to + "." + leaf, true
		}
	}
	return "", false
}

// splitIndex cuts "12.rest" into 12 and "rest".
func splitIndex(s string) (int, string, bool) {
	head, rest, ok := strings.Cut(s, ".")
	if !ok {
		return 0, "", false
	}
	i, err := strconv.Atoi(head)
	if err != nil || i < 0 || itoa(i) != head {
		return 0, "", false
	}
	return i, rest, true
}

// isLeaf reports whether s is ".weight"-terminated module path or similar:
// a non-empty dotted path ending in weight or bias.
func isParam(s string) bool {
	return strings.HasSuffix(s, ".weight") || strings.HasSuffix(s, ".bias") || s == "weight" || s == "bias"
}

// isTransformerParam reports whether rest names a parameter inside a
// SpatialTransformer (whose inner names the two layouts share).
func isTransformerParam(rest string) bool {
	if !isParam(rest) {
		return false
	}
	for _, p := range []string{"norm.", "proj_in.", "proj_out.", "transformer_blocks."} {
		if strings.HasPrefix(rest, p) {
			return true
		}
	}
	return false
}

// UNetToDiffusers maps an original UNet key (without the
// "model.diffusion_model." prefix) to its diffusers name.
func UNetToDiffusers(orig string, lpb int) (string, error) {
	bad := errBad("checkpoint: unexpected UNet tensor %q", PrefixUNet+orig)
	if lpb < 1 {
		return "", fmt.Errorf("checkpoint: layers per block %d", lpb)
	}
	switch {
	case strings.HasPrefix(orig, "label_emb.0."): // SDXL's added text_time embedding
		i, leaf, ok := splitIndex(strings.TrimPrefix(orig, "label_emb.0."))
		if !ok || !isParam(leaf) || strings.Contains(leaf, ".") || (i != 0 && i != 2) {
			return "", bad
		}
		return "add_embedding.linear_" + itoa(i/2+1) + "." + leaf, nil
	case strings.HasPrefix(orig, "time_embed."):
		i, leaf, ok := splitIndex(strings.TrimPrefix(orig, "time_embed."))
		if !ok || !isParam(leaf) || strings.Contains(leaf, ".") || (i != 0 && i != 2) {
			return "", bad
		}
		return "time_embedding.linear_" + itoa(i/2+1) + "." + leaf, nil
	case strings.HasPrefix(orig, "out."):
		i, leaf, ok := splitIndex(strings.TrimPrefix(orig, "out."))
		if !ok || !isParam(leaf) || strings.Contains(leaf, ".") {
			return "", bad
		}
		switch i {
		case 0:
			return "conv_norm_out." + leaf, nil
		case 2:
			return "conv_out." + leaf, nil
		}
		return "", bad
	case strings.HasPrefix(orig, "input_blocks."):
		i, rest, ok := splitIndex(strings.TrimPrefix(orig, "input_blocks."))
		if !ok {
			return "", bad
		}
		j, rest, ok := splitIndex(rest)
		if !ok {
			return "", bad
		}
		if i == 0 {
			if j != 0 || !isParam(rest) || strings.Contains(rest, ".") {
				return "", bad
			}
			return "conv_in." + rest, nil
		}
		b, l := (i-1)/(lpb+1), (i-1)%(lpb+1)
		p := "down_blocks." + itoa(b) + "."
		switch {
		case l < lpb && j == 0:
			if r, ok := renameInner(rest, resnetOrigToDiff, false); ok {
				return p + "resnets." + itoa(l) + "." + r, nil
			}
		case l < lpb && j == 1:
			if isTransformerParam(rest) {
				return p + "attentions." + itoa(l) + "." + rest, nil
			}
		case l == lpb && j == 0:
			if leaf, ok := strings.CutPrefix(rest, "op."); ok && (leaf == "weight" || leaf == "bias") {
				return p + "downsamplers.0.conv." + leaf, nil
			}
		}
		return "", bad
	case strings.HasPrefix(orig, "middle_block."):
		j, rest, ok := splitIndex(strings.TrimPrefix(orig, "middle_block."))
		if !ok {
			return "", bad
		}
		switch j {
		case 0, 2:
			if r, ok := renameInner(rest, resnetOrigToDiff, false); ok {
				return "mid_block.resnets." + itoa(j/2) + "." + r, nil
			}
		case 1:
			if isTransformerParam(rest) {
				return "mid_block.attentions.0." + rest, nil
			}
		}
		return "", bad
	case strings.HasPrefix(orig, "output_blocks."):
		i, rest, ok := splitIndex(strings.TrimPrefix(orig, "output_blocks."))
		if !ok {
			return "", bad
		}
		j, rest, ok := splitIndex(rest)
		if !ok {
			return "", bad
		}
		b, l := i/(lpb+1), i%(lpb+1)
		p := "up_blocks." + itoa(b) + "."
		if j == 0 {
			if r, ok := renameInner(rest, resnetOrigToDiff, false); ok {
				return p + "resnets." + itoa(l) + "." + r, nil
			}
			return "", bad
		}
		if leaf, ok := strings.CutPrefix(rest, "conv."); ok && (leaf == "weight" || leaf == "bias") && l == lpb && (j == 1 || j == 2) {
			return p + "upsamplers.0.conv." + leaf, nil
		}
		if j == 1 && isTransformerParam(rest) {
			return p + "attentions." + itoa(l) + "." + rest, nil
		}
		return "", bad
	}
	return "", bad
}

// UNetToOriginal maps a diffusers UNet name to its original key (without
// the "model.diffusion_model." prefix).
func UNetToOriginal(name string, l Layout) (string, error) {
	lpb := l.UNetLayersPerBlock
	bad := errBad("checkpoint: UNet tensor %q has no original-layout name", name)
	if lpb < 1 {
		return "", fmt.Errorf("checkpoint: layers per block %d", lpb)
	}
	simple := map[string]string{"conv_in.": "input_blocks.0.0.", "time_embedding.linear_1.": "time_embed.0.",
		"time_embedding.linear_2.": "time_embed.2.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
		"add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2."}
	for from, to := range simple {
		if leaf, ok := strings.CutPrefix(name, from); ok && (leaf == "weight" || leaf == "bias") {
			return to + leaf, nil
		}
	}
	resnet := func(prefix, rest string) (string, error) {
		r, ok := renameInner(rest, resnetOrigToDiff, true)
		if !ok {
			return "", bad
		}
		return prefix + r, nil
	}
	switch {
	case strings.HasPrefix(name, "down_blocks."):
		b, rest, ok := splitIndex(strings.TrimPrefix(name, "down_blocks."))
		if !ok {
			return "", bad
		}
		base := 1 + b*(lpb+1)
		if r, ok := strings.CutPrefix(rest, "resnets."); ok {
			k, inner, ok := splitIndex(r)
			if !ok || k >= lpb {
				return "", bad
			}
			return resnet("input_blocks."+itoa(base+k)+".0.", inner)
		}
		if r, ok := strings.CutPrefix(rest, "attentions."); ok {
			k, inner, ok := splitIndex(r)
			if !ok || k >= lpb || !isTransformerParam(inner) {
				return "", bad
			}
			return "input_blocks." + itoa(base+k) + ".1." + inner, nil
		}
		if leaf, ok := strings.CutPrefix(rest, "downsamplers.0.conv."); ok && (leaf == "weight" || leaf == "bias") {
			return "input_blocks." + itoa(base+lpb) + ".0.op." + leaf, nil
		}
	case strings.HasPrefix(name, "mid_block."):
		rest := strings.TrimPrefix(name, "mid_block.")
		if r, ok := strings.CutPrefix(rest, "resnets."); ok {
			k, inner, ok := splitIndex(r)
			if !ok || k > 1 {
				return "", bad
			}
			return resnet("middle_block."+itoa(2*k)+".", inner)
		}
		if inner, ok := strings.CutPrefix(rest, "attentions.0."); ok && isTransformerParam(inner) {
			return "middle_block.1." + inner, nil
		}
	case strings.HasPrefix(name, "up_blocks."):
		b, rest, ok := splitIndex(strings.TrimPrefix(name, "up_blocks."))
		if !ok {
			return "", bad
		}
		base := b * (lpb + 1)
		if r, ok := strings.CutPrefix(rest, "resnets."); ok {
			k, inner, ok := splitIndex(r)
			if !ok || k > lpb {
				return "", bad
			}
			return resnet("output_blocks."+itoa(base+k)+".0.", inner)
		}
		if r, ok := strings.CutPrefix(rest, "attentions."); ok {
			k, inner, ok := splitIndex(r)
			if !ok || k > lpb || !isTransformerParam(inner) {
				return "", bad
			}
			return "output_blocks." + itoa(base+k) + ".1." + inner, nil
		}
		if leaf, ok := strings.CutPrefix(rest, "upsamplers.0.conv."); ok && (leaf == "weight" || leaf == "bias") {
			if b >= len(l.UNetUpAttention) {
				return "", fmt.Errorf("checkpoint: UNet tensor %q: layout has %d up levels", name, len(l.UNetUpAttention))
			}
			j := 1
			if l.UNetUpAttention[b] {
				j = 2
			}
			return "output_blocks." + itoa(base+lpb) + "." + itoa(j) + ".conv." + leaf, nil
		}
	}
	return "", bad
}

// VAEToDiffusers maps an original VAE key (without "first_stage_model.") to
// its diffusers name; reshape reports a 1×1 convolution weight that
// diffusers stores as a linear (C, C) matrix.
func VAEToDiffusers(orig string, levels int) (name string, reshape bool, err error) {
	bad := errBad("checkpoint: unexpected VAE tensor %q", PrefixVAE+orig)
	if levels < 1 {
		return "", false, fmt.Errorf("checkpoint: VAE with %d levels", levels)
	}
	for _, q := range []string{"quant_conv.", "post_quant_conv."} {
		if leaf, ok := strings.CutPrefix(orig, q); ok && (leaf == "weight" || leaf == "bias") {
			return orig, false, nil
		}
	}
	side, rest, ok := strings.Cut(orig, ".")
	if !ok || (side != "encoder" && side != "decoder") {
		return "", false, bad
	}
	for _, e := range [][2]string{{"conv_in", "conv_in"}, {"conv_out", "conv_out"}, {"norm_out", "conv_norm_out"}} {
		if leaf, ok := strings.CutPrefix(rest, e[0]+"."); ok && (leaf == "weight" || leaf == "bias") {
			return side + "." + e[1] + "." + leaf, false, nil
		}
	}
	resnet := func(prefix, inner string) (string, bool, error) {
		if r, ok := renameInner(inner, [][2]string{{"nin_shortcut", "conv_shortcut"}, {"norm1", "norm1"}, {"conv1", "conv1"}, {"norm2", "norm2"}, {"conv2", "conv2"}}, false); ok {
			return prefix + r, false, nil
		}
		return "", false, bad
	}
	if mid, ok := strings.CutPrefix(rest, "mid."); ok {
		switch {
		case strings.HasPrefix(mid, "block_1."):
			return resnet(side+".mid_block.resnets.0.", strings.TrimPrefix(mid, "block_1."))
		case strings.HasPrefix(mid, "block_2."):
			return resnet(side+".mid_block.resnets.1.", strings.TrimPrefix(mid, "block_2."))
		case strings.HasPrefix(mid, "attn_1."):
			if r, ok := renameInner(strings.TrimPrefix(mid, "attn_1."), vaeAttnOrigToDiff, false); ok {
				return side + ".mid_block.attentions.0." + r, strings.HasSuffix(r, ".weight") && !strings.HasPrefix(r, "group_norm."), nil
			}
		}
		return "", false, bad
	}
	levelKey, blocks := "down.", ".down_blocks."
	if side == "decoder" {
		levelKey, blocks = "up.", ".up_blocks."
	}
	r, ok := strings.CutPrefix(rest, levelKey)
	if !ok {
		return "", false, bad
	}
	lvl, inner, ok := splitIndex(r)
	if !ok || lvl >= levels {
		return "", false, bad
	}
	if side == "decoder" {
		lvl = levels - 1 - lvl
	}
	p := side + blocks + itoa(lvl) + "."
	if r, ok := strings.CutPrefix(inner, "block."); ok {
		k, in2, ok := splitIndex(r)
		if !ok {
			return "", false, bad
		}
		return resnet(p+"resnets."+itoa(k)+".", in2)
	}
	sample := "downsample.conv."
	if side == "decoder" {
		sample = "upsample.conv."
	}
	if leaf, ok := strings.CutPrefix(inner, sample); ok && (leaf == "weight" || leaf == "bias") {
		what := "downsamplers"
		if side == "decoder" {
			what = "upsamplers"
		}
		return p + what + ".0.conv." + leaf, false, nil
	}
	return "", false, bad
}

// VAEToOriginal maps a diffusers VAE name to its original key (without
// "first_stage_model."); reshape reports a linear attention weight that the
// original stores as a (C, C, 1, 1) convolution.
func VAEToOriginal(name string, levels int) (orig string, reshape bool, err error) {
	bad := errBad("checkpoint: VAE tensor %q has no original-layout name", name)
	if levels < 1 {
		return "", false, fmt.Errorf("checkpoint: VAE with %d levels", levels)
	}
	for _, q := range []string{"quant_conv.", "post_quant_conv."} {
		if leaf, ok := strings.CutPrefix(name, q); ok && (leaf == "weight" || leaf == "bias") {
			return name, false, nil
		}
	}
	side, rest, ok := strings.Cut(name, ".")
	if !ok || (side != "encoder" && side != "decoder") {
		return "", false, bad
	}
	for _, e := range [][2]string{{"conv_in", "conv_in"}, {"conv_out", "conv_out"}, {"conv_norm_out", "norm_out"}} {
		if leaf, ok := strings.CutPrefix(rest, e[0]+"."); ok && (leaf == "weight" || leaf == "bias") {
			return side + "." + e[1] + "." + leaf, false, nil
		}
	}
	resnet := func(prefix, inner string) (string, bool, error) {
		if r, ok := renameInner(inner, [][2]string{{"nin_shortcut", "conv_shortcut"}, {"norm1", "norm1"}, {"conv1", "conv1"}, {"norm2", "norm2"}, {"conv2", "conv2"}}, true); ok {
			return prefix + r, false, nil
		}
		return "", false, bad
	}
	if mid, ok := strings.CutPrefix(rest, "mid_block."); ok {
		switch {
		case strings.HasPrefix(mid, "resnets.0."):
			return resnet(side+".mid.block_1.", strings.TrimPrefix(mid, "resnets.0."))
		case strings.HasPrefix(mid, "resnets.1."):
			return resnet(side+".mid.block_2.", strings.TrimPrefix(mid, "resnets.1."))
		case strings.HasPrefix(mid, "attentions.0."):
			inner := strings.TrimPrefix(mid, "attentions.0.")
			if r, ok := renameInner(inner, vaeAttnOrigToDiff, true); ok {
				return side + ".mid.attn_1." + r, strings.HasSuffix(r, ".weight") && !strings.HasPrefix(r, "norm."), nil
			}
		}
		return "", false, bad
	}
	blocks, levelKey := "down_blocks.", ".down."
	if side == "decoder" {
		blocks, levelKey = "up_blocks.", ".up."
	}
	r, ok := strings.CutPrefix(rest, blocks)
	if !ok {
		return "", false, bad
	}
	lvl, inner, ok := splitIndex(r)
	if !ok || lvl >= levels {
		return "", false, bad
	}
	if side == "decoder" {
		lvl = levels - 1 - lvl
	}
	p := side + levelKey + itoa(lvl) + "."
	if r, ok := strings.CutPrefix(inner, "resnets."); ok {
		k, in2, ok := splitIndex(r)
		if !ok {
			return "", false, bad
		}
		return resnet(p+"block."+itoa(k)+".", in2)
	}
	sampler, sample := "downsamplers.0.conv.", "downsample.conv."
	if side == "decoder" {
		sampler, sample = "upsamplers.0.conv.", "upsample.conv."
	}
	if leaf, ok := strings.CutPrefix(inner, sampler); ok && (leaf == "weight" || leaf == "bias") {
		return p + sample + leaf, false, nil
	}
	return "", false, bad
}

// TextToDiffusers maps an original CLIP text encoder key (without
// "cond_stage_model.transformer.") to the name this package presents: the
// transformers CLIPTextModel name without its "text_model." prefix. The
// position_ids buffer maps to "" (it is not a weight and is dropped).
func TextToDiffusers(orig string) (string, error) {
	return textToDiffusers(PrefixCLIP, orig)
}

// textToDiffusers is TextToDiffusers for keys under prefix (named in
// messages).
func textToDiffusers(prefix, orig string) (string, error) {
	name := strings.TrimPrefix(orig, "text_model.")
	if name == "embeddings.position_ids" {
		return "", nil
	}
	if !isParam(name) || !(strings.HasPrefix(name, "embeddings.") || strings.HasPrefix(name, "encoder.layers.") || strings.HasPrefix(name, "final_layer_norm.")) {
		return "", fmt.Errorf("checkpoint: unexpected text encoder tensor %q", prefix+orig)
	}
	return name, nil
}

// TextToOriginal maps a text encoder name (with or without "text_model.")
// to its original key without "cond_stage_model.transformer.".
func TextToOriginal(name string) string {
	return "text_model." + strings.TrimPrefix(name, "text_model.")
}

// lazyErr formats its message only when read, so that the mapping's
// happy path allocates no error text.
type lazyErr struct {
	format string
	name   string
}

// Error formats the message.
func (e *lazyErr) Error() string { return fmt.Sprintf(e.format, e.name) }

func errBad(format, name string) error { return &lazyErr{format, name} }
