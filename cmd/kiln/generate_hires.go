package main

import (
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/gateway/validate"
)

// hiresFlags are `kiln generate`'s hires-fix settings.
type hiresFlags struct {
	spec, upscaler string
	steps          int
	denoise        float64
}

func (h *hiresFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&h.spec, "hires", "", "hires fix: generate at --width×--height (default: the model's native size), upscale by SCALE (e.g. 2) or to WIDTHxHEIGHT (one side 0: keep the aspect ratio), then img2img at that size")
	fs.StringVar(&h.upscaler, "hires-upscaler", pipeline.UpscaleLatent, "hires upscaler: latent (enlarge the latents) or lanczos (decode, Lanczos-3, encode)")
	fs.IntVar(&h.steps, "hires-steps", 0, "steps of the hires pass (0: --steps); the last --hires-denoise of them run")
	fs.Float64Var(&h.denoise, "hires-denoise", pipeline.DefaultHiresDenoise, "denoising strength of the hires pass, in (0, 1]")
}

// parse reads --hires into a pipeline.Hires (zero when not given).
func (h *hiresFlags) parse() (pipeline.Hires, error) {
	if h.spec == "" {
		return pipeline.Hires{}, nil
	}
	out := pipeline.Hires{Upscaler: h.upscaler, Steps: h.steps, Denoise: h.denoise}
	if ws, hs, ok := strings.Cut(strings.ToLower(h.spec), "x"); ok {
		w, err1 := strconv.Atoi(ws)
		ht, err2 := strconv.Atoi(hs)
		if err1 != nil || err2 != nil || w < 0 || ht < 0 || w > validate.MaxSide || ht > validate.MaxSide || w+ht == 0 {
			return out, fmt.Errorf("--hires %q: want SCALE or WIDTHxHEIGHT with sides 0..%d", h.spec, validate.MaxSide)
		}
		out.Width, out.Height = w, ht
		return out, nil
	}
	s, err := strconv.ParseFloat(h.spec, 64)
	if err != nil || math.IsNaN(s) || s <= 1 || s > pipeline.MaxHiresScale {
		return out, fmt.Errorf("--hires %q: want a scale above 1 and at most %d, or WIDTHxHEIGHT", h.spec, pipeline.MaxHiresScale)
	}
	out.Scale = s
	return out, nil
}

// check validates the flags; set tells which flags were given.
func (h *hiresFlags) check(initImage string, set map[string]bool) error {
	if h.spec == "" {
		if set["hires-upscaler"] || set["hires-steps"] || set["hires-denoise"] {
			return fmt.Errorf("--hires-upscaler, --hires-steps and --hires-denoise need --hires")
		}
		return nil
	}
	switch {
	case initImage != "":
		return fmt.Errorf("--hires starts from text: it does not combine with --init-image")
	case h.upscaler != pipeline.UpscaleLatent && h.upscaler != pipeline.UpscaleLanczos:
		return fmt.Errorf("--hires-upscaler %q: want latent or lanczos", h.upscaler)
	case h.steps < 0 || h.steps > pipeline.MaxSteps:
		return fmt.Errorf("--hires-steps %d: want 0..%d", h.steps, pipeline.MaxSteps)
	case math.IsNaN(h.denoise) || h.denoise <= 0 || h.denoise > 1:
		return fmt.Errorf("--hires-denoise %v: want a value in (0, 1]", h.denoise)
	}
	_, err := h.parse()
	return err
}

// generation sets the hires fields of an image's description as
// AUTOMATIC1111 records them: the first pass's size and the hires pass's
// settings.
func (h *hiresFlags) generation(g *imageio.Generation, req pipeline.Request, res *pipeline.Result) {
	if !req.Hires.On() {
		return
	}
	g.Width, g.Height = res.HiresFrom[0], res.HiresFrom[1]
	g.DenoisingStrength = h.denoise
	g.Hires = &imageio.Hires{Scale: req.Hires.Scale, Width: req.Hires.Width, Height: req.Hires.Height, Steps: h.steps, Upscaler: h.upscaler}
}
