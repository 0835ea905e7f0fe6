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

// editFlags are `kiln generate`'s inpainting, outpainting and
// variation-seed settings (issue 18).
type editFlags struct {
	mask, fill, outpaint, resizeFrom string
	maskBlur, fullResPadding         int
	fullRes                          bool
	subseed                          int64
	subseedStrength                  float64
}

func (e *editFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&e.mask, "mask", "", "inpainting mask (PNG or JPEG; white = repaint) for --init-image")
	fs.IntVar(&e.maskBlur, "mask-blur", 4, fmt.Sprintf("Gaussian blur of the mask in pixels, 0..%d (softens the paste-back seam)", pipeline.MaxMaskBlur))
	fs.StringVar(&e.fill, "inpaint-fill", "", "masked content: original, latent_noise, latent_nothing (default: diffusers' — pure noise at strength 1)")
	fs.BoolVar(&e.fullRes, "inpaint-full-res", false, "inpaint only the region around --mask, at --width×--height, and paste it back into the whole image")
	fs.IntVar(&e.fullResPadding, "inpaint-full-res-padding", 32, fmt.Sprintf("pixels around the mask included with --inpaint-full-res, 0..%d", pipeline.MaxFullResPadding))
	fs.StringVar(&e.outpaint, "outpaint", "", "extend --init-image's canvas by LEFT,RIGHT,TOP,BOTTOM pixels and paint the new border")
	fs.Int64Var(&e.subseed, "subseed", 0, "variation seed (image i uses subseed+i; every image keeps --seed)")
	fs.Float64Var(&e.subseedStrength, "subseed-strength", 0, "variation strength in [0, 1]: 0 is --seed's image, 1 --subseed's")
	fs.StringVar(&e.resizeFrom, "seed-resize-from", "", "WIDTHxHEIGHT: draw the seed's noise as for that size (keeps a seed's composition across sizes)")
}

// check validates the flags; set tells which flags were given.
func (e *editFlags) check(initImage string, set map[string]bool) error {
	switch {
	case (e.mask != "" || e.outpaint != "") && initImage == "":
		return fmt.Errorf("--mask and --outpaint edit an image: give --init-image")
	case e.mask != "" && e.outpaint != "":
		return fmt.Errorf("give --mask or --outpaint, not both")
	case e.maskBlur < 0 || e.maskBlur > pipeline.MaxMaskBlur:
		return fmt.Errorf("--mask-blur %d: want 0..%d", e.maskBlur, pipeline.MaxMaskBlur)
	case (set["mask-blur"] || e.fill != "") && e.mask == "" && e.outpaint == "":
		return fmt.Errorf("--mask-blur and --inpaint-fill need --mask or --outpaint")
	case e.fullRes && e.mask == "":
		return fmt.Errorf("--inpaint-full-res needs --mask")
	case e.fullResPadding < 0 || e.fullResPadding > pipeline.MaxFullResPadding:
		return fmt.Errorf("--inpaint-full-res-padding %d: want 0..%d", e.fullResPadding, pipeline.MaxFullResPadding)
	case math.IsNaN(e.subseedStrength) || e.subseedStrength < 0 || e.subseedStrength > 1:
		return fmt.Errorf("--subseed-strength %v: want 0..1", e.subseedStrength)
	case e.subseed < 0 || e.subseed > validate.MaxSeed:
		return fmt.Errorf("--subseed %d: want 0..%d", e.subseed, int64(validate.MaxSeed))
	}
	switch e.fill {
	case "", pipeline.FillOriginal, pipeline.FillLatentNoise, pipeline.FillLatentNothing:
	default:
		return fmt.Errorf("--inpaint-fill %q: want original, latent_noise or latent_nothing", e.fill)
	}
	if _, err := e.outpaintSides(); err != nil {
		return err
	}
	if _, _, err := e.resizeSize(); err != nil {
		return err
	}
	return nil
}

// outpaintSides parses --outpaint.
func (e *editFlags) outpaintSides() (pipeline.Outpaint, error) {
	if e.outpaint == "" {
		return pipeline.Outpaint{}, nil
	}
	parts := strings.Split(e.outpaint, ",")
	var v [4]int
	if len(parts) != 4 {
		return pipeline.Outpaint{}, fmt.Errorf("--outpaint %q: want LEFT,RIGHT,TOP,BOTTOM pixels", e.outpaint)
	}
	for k, s := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 || n > validate.MaxSide {
			return pipeline.Outpaint{}, fmt.Errorf("--outpaint %q: want four pixel counts 0..%d", e.outpaint, validate.MaxSide)
		}
		v[k] = n
	}
	if v == [4]int{} {
		return pipeline.Outpaint{}, fmt.Errorf("--outpaint %q extends nothing", e.outpaint)
	}
	return pipeline.Outpaint{Left: v[0], Right: v[1], Top: v[2], Bottom: v[3]}, nil
}

// resizeSize parses --seed-resize-from.
func (e *editFlags) resizeSize() (w, h int, err error) {
	if e.resizeFrom == "" {
		return 0, 0, nil
	}
	ws, hs, ok := strings.Cut(strings.ToLower(e.resizeFrom), "x")
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	if !ok || err1 != nil || err2 != nil || w < 1 || h < 1 || w > validate.MaxSide || h > validate.MaxSide {
		return 0, 0, fmt.Errorf("--seed-resize-from %q: want WIDTHxHEIGHT, sides 1..%d", e.resizeFrom, validate.MaxSide)
	}
	return w, h, nil
}

// apply sets the request's variation and edit fields.
func (e *editFlags) apply(req *pipeline.Request) error {
	w, h, _ := e.resizeSize()
	req.Variation = pipeline.Variation{Subseed: uint64(e.subseed), Strength: e.subseedStrength, ResizeFromWidth: w, ResizeFromHeight: h}
	if e.mask == "" && e.outpaint == "" {
		return nil
	}
	req.Edit = pipeline.Edit{MaskBlur: e.maskBlur, Fill: e.fill}
	if e.fullRes {
		req.Edit.FullRes, req.Edit.FullResPadding = true, e.fullResPadding
	}
	req.Edit.Outpaint, _ = e.outpaintSides()
	if e.mask != "" {
		m, err := loadImage(e.mask)
		if err != nil {
			return fmt.Errorf("mask: %w", err)
		}
		req.Edit.Mask = m
	}
	return nil
}

// parameters adds AUTOMATIC1111's names for these settings to an image's
// parameters text.
func (e *editFlags) parameters(ps *imageio.Parameters, res *pipeline.Result, i int) {
	if res.Subseeds != nil {
		ps.Set("Variation seed", strconv.FormatUint(res.Subseeds[i], 10))
		ps.Set("Variation seed strength", strconv.FormatFloat(e.subseedStrength, 'g', -1, 64))
	}
	if e.resizeFrom != "" {
		w, h, _ := e.resizeSize()
		ps.Set("Seed resize from", fmt.Sprintf("%dx%d", w, h))
	}
	if e.mask != "" || e.outpaint != "" {
		ps.Set("Mask blur", strconv.Itoa(e.maskBlur))
	}
	if e.fill != "" {
		ps.Set("Masked content", e.fill)
	}
	if e.outpaint != "" {
		ps.Set("Outpaint", e.outpaint)
	}
	if e.fullRes {
		ps.Set("Inpaint area", "Only masked")
		ps.Set("Only masked padding, pixels", strconv.Itoa(e.fullResPadding))
	}
}
