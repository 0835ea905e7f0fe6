package sdxl

import "github.com/kiln-project/kiln/core/lora"

// LoRATargets gives the parts LoRAs adapt (lora.Adaptable): the UNet and
// both text encoders (the refiner has only the second). Embeddings are not
// injected into SDXL prompts yet, so EmbeddingDims lists the encoders'
// widths only for parsing.
//
// TODO(lora): kohya SDXL files name UNet modules in the SGM layout
// (input_blocks.4.1…); they need a name table to diffusers paths before
// they match (core/checkpoint has the single-file one).
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
