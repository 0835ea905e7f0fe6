package pipeline

import (
	"errors"
	"fmt"
	"image"
	"math"
)

// Masked-content fill modes (Edit.Fill): what the masked region of the
// init latents starts from.
const (
	// FillDefault is diffusers' inpainting: the init latents noised to the
	// strength's level, or pure noise at strength 1.
	FillDefault = ""
	// FillOriginal always starts from the init image's latents, noised to
	// the strength's level (A1111's "original"), strength 1 included.
	FillOriginal = "original"
	// FillLatentNoise replaces the masked latents by the initial noise
	// before noising (A1111's "latent noise").
	FillLatentNoise = "latent_noise"
	// FillLatentNothing zeroes the masked latents before noising (A1111's
	// "latent nothing").
	FillLatentNothing = "latent_nothing"
)

// Edit turns an img2img request into inpainting or outpainting with any
// model: after every sampler step the latents outside the mask are reset to
// the init image's latents noised to the next step's level (diffusers'
// StableDiffusionInpaintPipeline for 4-channel UNets), and the decoded image
// is pasted over the init image through the (blurred) mask, so pixels
// outside it come back unchanged.
type Edit struct {
	// Mask marks what to repaint: white repaints, black keeps (its
	// luminance, resized to the image's size). It needs an init image.
	Mask image.Image
	// MaskBlur is the standard deviation in pixels of the Gaussian blur of
	// the mask (0: none), which softens the paste-back seam.
	MaskBlur int
	// Fill is the masked-content mode (FillDefault, FillOriginal,
	// FillLatentNoise, FillLatentNothing).
	Fill string
	// Outpaint extends the init image's canvas (see Outpaint).
	Outpaint Outpaint
	// FullRes inpaints only the region around the mask, grown by
	// FullResPadding pixels, at the request's size (AUTOMATIC1111's
	// inpaint_full_res), and pastes it back into the whole image.
	FullRes        bool
	FullResPadding int

	full *fullRes // set by cropToMask
}

// on reports whether e edits an image.
func (e Edit) on() bool { return e.Mask != nil || !e.Outpaint.zero() }

// MaxMaskBlur bounds Edit.MaskBlur.
const MaxMaskBlur = 256

// editState is a job's resolved inpainting state.
type editState struct {
	w, h   int
	alpha  []float32 // (h, w) blurred mask in [0, 1], 1 = repaint
	latent []float32 // (c, lh, lw) binary latent mask, 1 = repaint
	init   []float32 // (3, h, w) init pixels in [0, 1]
	fill   string
	x0     []float32 // init latents of the batch (denoiser scale)
	noise  []float32 // the batch's initial noise
	full   *fullRes  // full-resolution inpainting, or nil
	// unet9 marks an inpainting UNet (no blending: it takes cond, each
	// image's mask and masked-image latents, as extra input channels)
	unet9   bool
	cond    []float32
	condPer int
	p       *Pipeline
}

// maskAlpha is a mask image's luminance (PIL's "L" weights) resized to
// w×h, in [0, 1].
func maskAlpha(m image.Image, w, h int) []float32 {
	rgb := imageToPixels(m, w, h)
	a := make([]float32, w*h)
	for k := range a {
		a[k] = float32(0.299*float64(rgb[k]) + 0.587*float64(rgb[w*h+k]) + 0.114*float64(rgb[2*w*h+k]))
	}
	return a
}

// resolveEdits validates a job's variation and edit settings and builds
// its masks.
func (p *Pipeline) resolveEdits(j *job) error {
	if err := j.req.Variation.check(j); err != nil {
		return err
	}
	j.warnings = p.sizeWarnings(j)
	e := j.req.Edit
	if !e.on() {
		if p.def.DenoiserChannels != 0 {
			return errors.New("pipeline: this is an inpainting model: give an init image and a mask (or outpaint)")
		}
		if e.MaskBlur != 0 || e.Fill != "" {
			return errors.New("pipeline: mask blur and fill apply to inpainting only (no mask given)")
		}
		return nil
	}
	switch e.Fill {
	case FillDefault, FillOriginal, FillLatentNoise, FillLatentNothing:
	default:
		return fmt.Errorf("pipeline: unknown fill %q (want %q, %q or %q)", e.Fill, FillOriginal, FillLatentNoise, FillLatentNothing)
	}
	switch {
	case e.MaskBlur < 0 || e.MaskBlur > MaxMaskBlur:
		return fmt.Errorf("pipeline: mask blur %d must be in 0..%d", e.MaskBlur, MaxMaskBlur)
	case j.initPixels == nil:
		return errors.New("pipeline: inpainting needs an init image")
	case j.req.InitLatents != nil || j.req.DenoisingEnd != 0:
		return errors.New("pipeline: inpainting runs the whole schedule (no denoising range)")
	}
	b := e.Mask.Bounds()
	if b.Dx() <= 0 || b.Dy() <= 0 {
		return errors.New("pipeline: mask is empty")
	}
	w, h := j.req.Width, j.req.Height
	st := &editState{w: w, h: h, init: j.initPixels, fill: e.Fill}
	st.alpha = maskAlpha(e.Mask, w, h)
	st.unet9, st.p = p.def.DenoiserChannels != 0, p
	st.full = e.full
	blurMask(st.alpha, w, h, e.MaskBlur)
	// diffusers binarises the mask at 0.5 and shrinks it to the latent
	// size by nearest-neighbour (the top-left pixel of each cell)
	f := w / j.w
	plane := j.h * j.w
	st.latent = make([]float32, j.c*plane)
	for y := 0; y < j.h; y++ {
		for x := 0; x < j.w; x++ {
			if st.alpha[y*f*w+x*f] >= 0.5 {
				for c := 0; c < j.c; c++ {
					st.latent[c*plane+y*j.w+x] = 1
				}
			}
		}
	}
	j.edit = st
	return nil
}

// needsInitLatents reports whether the job needs the init image's latents:
// an inpainting UNet at full strength in the default fill mode starts from
// pure noise and, as diffusers does, neither encodes the init image nor
// draws its posterior sample (which would shift every later draw).
func (e *editState) needsInitLatents(strength float64) bool {
	return !(e.unet9 && e.fill == FillDefault && strength >= 1)
}

// start sets a job's initial latents by its fill mode (x0 and noise are
// the batch's init latents and initial noise; st.x holds x0 noised to the
// first evaluation's level) and keeps what the blending needs.
func (e *editState) start(st *batchState, x0, noise []float32) error {
	e.x0, e.noise = x0, noise
	// diffusers then encodes the masked image, sampling its posterior with
	// the generator, even for 4-channel UNets that do not use it: the
	// draw keeps later noise (ancestral samplers) in step.
	var eps []float32
	if st.req.SharedGenerator {
		e1 := st.gens[0].Randn(st.per)
		for i := 0; i < st.n; i++ {
			eps = append(eps, e1...)
		}
	} else {
		eps = st.draw(st.per)
	}
	if e.unet9 {
		if err := e.maskedImage(st, eps); err != nil {
			return err
		}
	}
	var filled []float32
	switch e.fill {
	case FillDefault:
		if st.req.Strength >= 1 {
			// diffusers: pure noise at full strength
			sigma := float32(st.s.InitNoiseSigma())
			for k, v := range noise {
				st.x[k] = v * sigma
			}
		}
		return nil
	case FillOriginal:
		return nil
	case FillLatentNoise:
		filled = e.mix(x0, noise)
	case FillLatentNothing:
		filled = e.mix(x0, make([]float32, len(x0)))
	}
	st.x = st.s.AddNoise(filled, noise, st.begin)
	return nil
}

// maskedImage encodes the init image with the masked pixels set to grey
// (0 in [-1, 1]; diffusers' init_image · (mask < 0.5)), samples its
// posterior with eps for each image, and keeps each image's mask and
// masked-image latents as the inpainting UNet's extra input.
func (e *editState) maskedImage(st *batchState, eps []float32) error {
	plane := e.w * e.h
	px := make([]float32, 3*plane)
	for c := 0; c < 3; c++ {
		for k, a := range e.alpha {
			if a < 0.5 {
				px[c*plane+k] = 2*e.init[c*plane+k] - 1
			}
		}
	}
	mean, logvar, lshape, err := e.p.encodeImage(st.ctx, px, [4]int{1, 3, e.h, e.w})
	if err != nil {
		return fmt.Errorf("pipeline: vae encode of the masked image: %w", err)
	}
	if lshape[1]*lshape[2]*lshape[3] != st.per {
		return fmt.Errorf("pipeline: the masked image encoded to %v", lshape)
	}
	lat := make([]float32, st.n*st.per)
	for i := 0; i < st.n; i++ {
		for k := 0; k < st.per; k++ {
			lv := min(max(logvar[k], -30), 20)
			lat[i*st.per+k] = mean[k] + float32(math.Exp(0.5*float64(lv)))*eps[i*st.per+k]
		}
	}
	if err := e.p.m.ToDenoiser(lat, [4]int{st.n, st.c, st.h, st.w}); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	lp := st.h * st.w
	e.condPer = lp + st.per
	for i := 0; i < st.n; i++ {
		e.cond = append(e.cond, e.latent[:lp]...)
		e.cond = append(e.cond, lat[i*st.per:(i+1)*st.per]...)
	}
	return nil
}

// input returns the denoiser input of a job's n images: the scaled
// latents, followed per image by the mask and the masked image's latents
// for an inpainting UNet (diffusers' concatenation order).
func (e *editState) input(x []float32) []float32 {
	if !e.unet9 {
		return x
	}
	n := len(e.cond) / e.condPer
	per := len(x) / n
	out := make([]float32, 0, len(x)+len(e.cond))
	for i := 0; i < n; i++ {
		out = append(out, x[i*per:(i+1)*per]...)
		out = append(out, e.cond[i*e.condPer:(i+1)*e.condPer]...)
	}
	return out
}

// denoiserChannels is the denoiser's input channel count.
func (p *Pipeline) denoiserChannels() int {
	if c := p.def.DenoiserChannels; c != 0 {
		return c
	}
	return p.def.LatentChannels
}

// mix returns keep outside the mask and repaint inside, per image.
func (e *editState) mix(keep, repaint []float32) []float32 {
	out := make([]float32, len(keep))
	per := len(e.latent)
	for k := range out {
		m := e.latent[k%per]
		out[k] = (1-m)*keep[k] + m*repaint[k]
	}
	return out
}

// blend resets the latents outside the mask after a step: to the init
// latents noised to the next evaluation's level, or to the clean init
// latents after the last.
func (e *editState) blend(st *batchState) {
	if e.unet9 {
		return // the inpainting UNet sees the mask itself
	}
	proper := e.x0
	if st.i < len(st.ts) {
		proper = st.s.AddNoise(e.x0, e.noise, st.i)
	}
	st.x = e.mix(proper, st.x)
}

// paste lays the decoded images (n, 3, h, w) in [0, 1] over the init image
// through the blurred mask: where the mask is 0 the init pixels come back
// exactly.
func (e *editState) paste(res *Result) {
	defer func() {
		if e.full != nil {
			e.full.paste(res)
		}
	}()
	px, n := res.Pixels, res.PixelShape[0]
	plane := e.w * e.h
	for i := 0; i < n; i++ {
		img := px[i*3*plane : (i+1)*3*plane]
		for c := 0; c < 3; c++ {
			for k, a := range e.alpha {
				o := c*plane + k
				switch {
				case a <= 0:
					img[o] = e.init[o]
				case a < 1:
					img[o] = (1-a)*e.init[o] + a*img[o]
				}
			}
		}
	}
}

// blurMask blurs an (h, w) mask in place with a Gaussian of standard
// deviation sigma pixels, separably, over a kernel of radius
// int(2.5σ + 0.5) (A1111's kernel size) with edges replicated.
func blurMask(m []float32, w, h, sigma int) {
	if sigma <= 0 {
		return
	}
	r := int(2.5*float64(sigma) + 0.5)
	k := make([]float64, 2*r+1)
	var sum float64
	for i := -r; i <= r; i++ {
		k[i+r] = math.Exp(-float64(i*i) / (2 * float64(sigma*sigma)))
		sum += k[i+r]
	}
	for i := range k {
		k[i] /= sum
	}
	tmp := make([]float32, len(m))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var v float64
			for i := -r; i <= r; i++ {
				v += k[i+r] * float64(m[y*w+min(max(x+i, 0), w-1)])
			}
			tmp[y*w+x] = float32(v)
		}
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var v float64
			for i := -r; i <= r; i++ {
				v += k[i+r] * float64(tmp[min(max(y+i, 0), h-1)*w+x])
			}
			// exact zeros stay exact so paste-back keeps those pixels
			if v < 1e-6 {
				v = 0
			}
			m[y*w+x] = float32(min(v, 1))
		}
	}
}
