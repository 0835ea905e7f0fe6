package worker

import (
	"fmt"
	"strings"

	"github.com/kiln-project/kiln/core/sample"
	"github.com/kiln-project/kiln/server/jobs"
)

// parametersText formats a job's parameters as AUTOMATIC1111 writes them
// into the "parameters" PNG chunk: the prompt, the negative prompt, then a
// line of "Key: value" pairs.
func parametersText(p jobs.Params, seed uint64, width, height int) string {
	var b strings.Builder
	b.WriteString(p.Prompt)
	b.WriteByte('\n')
	if p.NegativePrompt != "" {
		b.WriteString("Negative prompt: ")
		b.WriteString(p.NegativePrompt)
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "Steps: %d, Sampler: %s, CFG scale: %g, Seed: %d, Size: %dx%d, Model: %s",
		p.Steps, sample.Label(p.Sampler), p.Guidance, seed, width, height, p.Model)
	if p.ClipSkip > 1 {
		fmt.Fprintf(&b, ", Clip skip: %d", p.ClipSkip)
	}
	if p.InitImage != "" {
		fmt.Fprintf(&b, ", Denoising strength: %g", p.Strength)
	}
	if h := hashList(p.LoRAs, nil); h != "" {
		fmt.Fprintf(&b, ", Lora hashes: \"%s\"", h)
	}
	if h := hashList(nil, p.Embeddings); h != "" {
		fmt.Fprintf(&b, ", TI hashes: \"%s\"", h)
	}
	b.WriteString(", Version: kiln")
	return b.String()
}

// hashList formats "name: hash, …" with A1111's 12-digit short hashes.
func hashList(ls []jobs.LoRA, es []jobs.Embedding) string {
	var parts []string
	short := func(h string) string { return h[:min(12, len(h))] }
	for _, l := range ls {
		parts = append(parts, l.Name+": "+short(l.Hash))
	}
	for _, e := range es {
		parts = append(parts, e.Name+": "+short(e.Hash))
	}
	return strings.Join(parts, ", ")
}
