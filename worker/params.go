package worker

import (
	"fmt"
	"strings"

	"github.com/kiln-project/kiln/server/jobs"
)

// samplerLabels are the names AUTOMATIC1111 shows for Kiln's samplers.
func samplerLabel(s string) string {
	switch s {
	case "euler":
		return "Euler"
	case "euler_a":
		return "Euler a"
	case "heun":
		return "Heun"
	case "ddim":
		return "DDIM"
	case "ddpm":
		return "DDPM"
	case "dpmpp_2m":
		return "DPM++ 2M"
	case "dpmpp_2m_karras":
		return "DPM++ 2M Karras"
	case "unipc":
		return "UniPC"
	case "lcm":
		return "LCM"
	case "pndm":
		return "PLMS"
	}
	return s
}

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
		p.Steps, samplerLabel(p.Sampler), p.Guidance, seed, width, height, p.Model)
	if p.ClipSkip > 1 {
		fmt.Fprintf(&b, ", Clip skip: %d", p.ClipSkip)
	}
	if p.InitImage != "" {
		fmt.Fprintf(&b, ", Denoising strength: %g", p.Strength)
	}
	b.WriteString(", Version: kiln")
	return b.String()
}
