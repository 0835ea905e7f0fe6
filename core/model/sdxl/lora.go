package sdxl

import (
	"strings"

	"github.com/kiln-project/kiln/core/checkpoint"
	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/core/model/nn"
)

// LoRATargets gives the parts LoRAs adapt (lora.Adaptable): the UNet and
// both text encoders (the refiner has only the second).
//
// Built adds the UNet's SGM names, which kohya's SDXL files use.
func (m *Model) LoRATargets() map[string]lora.Target {
	t := map[string]lora.Target{lora.UNet: m.UNet, lora.TextEncoder2: m.te2}
	if m.te1 != nil {
		t[lora.TextEncoder] = m.te1
	}
	return t
}

// EmbeddingDims gives each text encoder's hidden size.
func (m *Model) EmbeddingDims() map[string]int {
	d := map[string]int{lora.TextEncoder2: m.te2.Config().HiddenSize}
	if m.te1 != nil {
		d[lora.TextEncoder] = m.te1.Config().HiddenSize
	}
	return d
}

var _ lora.Adaptable = (*Model)(nil)

// LoRATargets implements lora.Adaptable for the built model: as Model's,
// with the UNet's modules also known by their original (SGM) paths, which
// kohya's SDXL LoRAs use (lora_unet_input_blocks_4_1_transformer_blocks_0_
// attn1_to_q is down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q).
func (b *Built) LoRATargets() map[string]lora.Target {
	t := b.Model.LoRATargets()
	l, err := checkpoint.ParseUNetLayout(b.ckpt.m.UNetConfig)
	if err != nil {
		return t // no aliases: diffusers-named files still match
	}
	layout := checkpoint.Layout{UNetLayersPerBlock: l.LayersPerBlock, UNetUpAttention: l.UpAttention}
	aliases := map[string]string{}
	for _, md := range b.UNet.Modules() {
		if orig, err := checkpoint.UNetToOriginal(md.Name+".weight", layout); err == nil {
			aliases[md.Name] = strings.TrimSuffix(orig, ".weight")
		}
	}
	t[lora.UNet] = aliased{Target: t[lora.UNet], aliases: aliases}
	return t
}

// aliased adds alias names to a target's modules.
type aliased struct {
	lora.Target
	aliases map[string]string
}

// Modules lists the target's modules with their aliases.
func (a aliased) Modules() []nn.Module {
	ms := a.Target.Modules()
	for i := range ms {
		if o, ok := a.aliases[ms[i].Name]; ok {
			ms[i].Aliases = append(ms[i].Aliases, o)
		}
	}
	return ms
}
