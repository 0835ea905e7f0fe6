package imageio

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/kiln-project/kiln/core/sample"
)

// Generation is how one image was made, in the terms AUTOMATIC1111 records.
// The CLI and the server both describe their images through it, so their
// "parameters" text is the same for the same settings.
type Generation struct {
	Prompt, NegativePrompt string
	Steps                  int
	// Sampler is Kiln's sampler name ("dpmpp_2m_karras"); it is written as
	// AUTOMATIC1111's sampler and schedule type.
	Sampler  string
	CFGScale float64
	Seed     uint64
	// Width and Height are the image size in pixels.
	Width, Height int
	// ModelHash is the model's short hash (see core/modelhash); empty
	// leaves the field out.
	ModelHash string
	// Model is the model's name.
	Model string
	// DenoisingStrength is img2img's strength (0: not img2img).
	DenoisingStrength float64
	// ClipSkip is A1111's clip skip (written when above 1).
	ClipSkip int
	// RNG is the noise source, "cpu" or "cuda" (A1111's "GPU", which it
	// leaves unwritten as its default).
	RNG string
	// LoraHashes maps LoRA names to their short hashes.
	LoraHashes map[string]string
	// TIHashes maps textual-inversion embedding names to their short
	// hashes (A1111's "TI hashes").
	TIHashes map[string]string
	// GuidanceRescale and Eta are written when set.
	GuidanceRescale, Eta float64
	// LiteralPrompt marks prompts tokenized without the emphasis syntax.
	LiteralPrompt bool
	// Hires is the hires fix (nil: none); Width×Height is then the first
	// pass's size and DenoisingStrength the second pass's.
	Hires *Hires
	// Version is the program that made the image ("kiln 1.2.3").
	Version string
}

// Hires is a hires fix as AUTOMATIC1111 records it: "Hires upscale: 2"
// (Scale) or "Hires resize: 1024x768" (Width×Height), "Hires steps: 10"
// (when set), "Hires upscaler: Latent".
type Hires struct {
	Scale         float64
	Width, Height int
	Steps         int
	// Upscaler is Kiln's name ("latent", "lanczos"), written as A1111's
	// ("Latent", "Lanczos").
	Upscaler string
}

// hiresUpscalers maps Kiln's upscaler names to AUTOMATIC1111's.
var hiresUpscalers = map[string]string{"latent": "Latent", "lanczos": "Lanczos"}

// Parameters returns the generation as AUTOMATIC1111 writes it: the
// prompt, the negative prompt and the line "Steps, Sampler, Schedule type,
// CFG scale, Seed, Size, Model hash, Model, [Denoising strength], [Clip
// skip], [RNG], [Lora hashes], …, Version".
func (g Generation) Parameters() Parameters {
	p := Parameters{Prompt: g.Prompt, NegativePrompt: g.NegativePrompt}
	num := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	p.Set("Steps", strconv.Itoa(g.Steps))
	if n, ok := sample.A1111(g.Sampler); ok {
		p.Set("Sampler", n.Sampler)
		p.Set("Schedule type", n.ScheduleLabel())
	} else if g.Sampler != "" {
		p.Set("Sampler", g.Sampler)
	}
	p.Set("CFG scale", num(g.CFGScale))
	p.Set("Seed", strconv.FormatUint(g.Seed, 10))
	p.Set("Size", fmt.Sprintf("%dx%d", g.Width, g.Height))
	if g.ModelHash != "" {
		p.Set("Model hash", g.ModelHash)
	}
	if g.Model != "" {
		p.Set("Model", g.Model)
	}
	if g.DenoisingStrength > 0 {
		p.Set("Denoising strength", num(g.DenoisingStrength))
	}
	if g.ClipSkip > 1 {
		p.Set("Clip skip", strconv.Itoa(g.ClipSkip))
	}
	if h := g.Hires; h != nil {
		if h.Scale > 0 {
			p.Set("Hires upscale", num(h.Scale))
		} else {
			p.Set("Hires resize", fmt.Sprintf("%dx%d", h.Width, h.Height))
		}
		if h.Steps > 0 {
			p.Set("Hires steps", strconv.Itoa(h.Steps))
		}
		up := hiresUpscalers[h.Upscaler]
		if up == "" {
			up = h.Upscaler
		}
		p.Set("Hires upscaler", up)
	}
	if g.RNG != "" && g.RNG != "cuda" {
		p.Set("RNG", strings.ToUpper(g.RNG))
	}
	if len(g.LoraHashes) > 0 {
		names := make([]string, 0, len(g.LoraHashes))
		for n := range g.LoraHashes {
			names = append(names, n)
		}
		sort.Strings(names)
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = n + ": " + g.LoraHashes[n]
		}
		p.Set("Lora hashes", strings.Join(parts, ", "))
	}
	if len(g.TIHashes) > 0 {
		names := make([]string, 0, len(g.TIHashes))
		for n := range g.TIHashes {
			names = append(names, n)
		}
		sort.Strings(names)
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = n + ": " + g.TIHashes[n]
		}
		p.Set("TI hashes", strings.Join(parts, ", "))
	}
	if g.GuidanceRescale > 0 {
		p.Set("Guidance rescale", num(g.GuidanceRescale))
	}
	if g.Eta > 0 {
		p.Set("Eta", num(g.Eta))
	}
	if g.LiteralPrompt {
		p.Set("Emphasis", "None")
	}
	if g.Version != "" {
		p.Set("Version", g.Version)
	}
	return p
}

// ParseGeneration reads parameters text back into a Generation (the
// inverse of Parameters for the fields it writes). Fields it does not
// know are ignored; a field it knows with a malformed value is an error.
func ParseGeneration(text string) (Generation, error) {
	p, err := ParseParameters(text)
	if err != nil {
		return Generation{}, err
	}
	g := Generation{Prompt: p.Prompt, NegativePrompt: p.NegativePrompt, RNG: "cuda"}
	for _, f := range p.Fields {
		var err error
		switch f.Key {
		case "Steps":
			g.Steps, err = strconv.Atoi(f.Value)
		case "CFG scale":
			g.CFGScale, err = strconv.ParseFloat(f.Value, 64)
		case "Seed":
			g.Seed, err = strconv.ParseUint(f.Value, 10, 64)
		case "Size":
			g.Width, g.Height, err = parseSize(f.Value)
		case "Hires upscale":
			g.Hires = orNewHires(g.Hires)
			g.Hires.Scale, err = strconv.ParseFloat(f.Value, 64)
		case "Hires resize":
			g.Hires = orNewHires(g.Hires)
			g.Hires.Width, g.Hires.Height, err = parseSize(f.Value)
		case "Hires steps":
			g.Hires = orNewHires(g.Hires)
			g.Hires.Steps, err = strconv.Atoi(f.Value)
		case "Hires upscaler":
			g.Hires = orNewHires(g.Hires)
			g.Hires.Upscaler = f.Value
			for kiln, a1111 := range hiresUpscalers {
				if a1111 == f.Value {
					g.Hires.Upscaler = kiln
				}
			}
		case "Model hash":
			g.ModelHash = f.Value
		case "Model":
			g.Model = f.Value
		case "Denoising strength":
			g.DenoisingStrength, err = strconv.ParseFloat(f.Value, 64)
		case "Clip skip":
			g.ClipSkip, err = strconv.Atoi(f.Value)
		case "RNG":
			g.RNG = strings.ToLower(f.Value)
		case "Lora hashes":
			g.LoraHashes = map[string]string{}
			for _, part := range strings.Split(f.Value, ",") {
				n, h, ok := strings.Cut(part, ":")
				if !ok {
					err = errors.New("want NAME: HASH pairs separated by commas")
					break
				}
				g.LoraHashes[strings.TrimSpace(n)] = strings.TrimSpace(h)
			}
		case "Guidance rescale":
			g.GuidanceRescale, err = strconv.ParseFloat(f.Value, 64)
		case "Eta":
			g.Eta, err = strconv.ParseFloat(f.Value, 64)
		case "Emphasis":
			g.LiteralPrompt = f.Value == "None"
		case "Version":
			g.Version = f.Value
		}
		if err != nil {
			return Generation{}, fmt.Errorf("imageio: parameter %q = %q: %w", f.Key, f.Value, err)
		}
	}
	sampler, _ := p.Get("Sampler")
	schedule, _ := p.Get("Schedule type")
	if name, err := sample.FromA1111(sampler, schedule); err == nil {
		g.Sampler = name
	} else {
		g.Sampler = sampler
	}
	return g, nil
}

// parseSize reads "WIDTHxHEIGHT".
func parseSize(v string) (w, h int, err error) {
	ws, hs, ok := strings.Cut(v, "x")
	if !ok {
		return 0, 0, errors.New("want WIDTHxHEIGHT")
	}
	if w, err = strconv.Atoi(ws); err == nil {
		h, err = strconv.Atoi(hs)
	}
	return w, h, err
}

// orNewHires returns h, or a new Hires when h is nil.
func orNewHires(h *Hires) *Hires {
	if h == nil {
		return &Hires{}
	}
	return h
}
