package openai

import (
	"bytes"
	"encoding/base64"
	"image"
	"image/png"
	"net/http"

	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/gateway/validate"
)

// Default denoising strengths of the multipart endpoints (the Kiln
// extension field strength overrides them).
const (
	// MaskedEditStrength repaints the mask's transparent region from noise,
	// as OpenAI's edits replace it (diffusers' inpainting default).
	MaskedEditStrength = 1.0
	// VariationStrength keeps the image's composition and colours while
	// redrawing its details.
	VariationStrength = 0.7
)

// EditRequest is the multipart form of POST /v1/images/edits. image (or
// image[], as the SDKs send arrays) and mask are files; mask is a PNG of
// the image's size whose transparent pixels (alpha 0) mark what to
// repaint, partly transparent ones blend. Without a mask an image with
// transparent pixels is its own mask; an opaque image is edited whole
// (img2img). Kiln's extensions: negative_prompt, seed, steps, guidance,
// sampler, strength, mask_blur, inpaint_fill, inpaint_full_res,
// inpaint_full_res_padding and allow_adjust.
type EditRequest struct {
	Image             string   `json:"image"`
	Mask              string   `json:"mask,omitempty"`
	Prompt            string   `json:"prompt"`
	Model             string   `json:"model,omitempty"`
	N                 *int     `json:"n,omitempty"`
	Size              string   `json:"size,omitempty"`
	ResponseFormat    string   `json:"response_format,omitempty"`
	Quality           string   `json:"quality,omitempty"`
	User              string   `json:"user,omitempty"`
	OutputFormat      string   `json:"output_format,omitempty"`
	Background        string   `json:"background,omitempty"`
	OutputCompression *int     `json:"output_compression,omitempty"`
	InputFidelity     string   `json:"input_fidelity,omitempty"`
	PartialImages     *int     `json:"partial_images,omitempty"`
	Stream            bool     `json:"stream,omitempty"`
	NegativePrompt    string   `json:"negative_prompt,omitempty"`
	Seed              *uint64  `json:"seed,omitempty"`
	Steps             *int     `json:"steps,omitempty"`
	Guidance          *float64 `json:"guidance,omitempty"`
	Sampler           string   `json:"sampler,omitempty"`
	Strength          *float64 `json:"strength,omitempty"`
	MaskBlur          *int     `json:"mask_blur,omitempty"`
	InpaintFill       string   `json:"inpaint_fill,omitempty"`
	InpaintFullRes    bool     `json:"inpaint_full_res,omitempty"`
	// InpaintFullResPadding is the margin around the mask with
	// inpaint_full_res.
	InpaintFullResPadding *int `json:"inpaint_full_res_padding,omitempty"`
	AllowAdjust           bool `json:"allow_adjust,omitempty"`
}

// VariationRequest is the multipart form of POST /v1/images/variations:
// image (a file), n, size, response_format, model and user. Kiln's
// extensions: prompt (default: the prompt in the image's PNG parameters,
// else none), negative_prompt, seed, steps, guidance, sampler, strength
// (default VariationStrength) and allow_adjust.
type VariationRequest struct {
	Image          string   `json:"image"`
	Model          string   `json:"model,omitempty"`
	N              *int     `json:"n,omitempty"`
	Size           string   `json:"size,omitempty"`
	ResponseFormat string   `json:"response_format,omitempty"`
	User           string   `json:"user,omitempty"`
	Prompt         string   `json:"prompt,omitempty"`
	NegativePrompt string   `json:"negative_prompt,omitempty"`
	Seed           *uint64  `json:"seed,omitempty"`
	Steps          *int     `json:"steps,omitempty"`
	Guidance       *float64 `json:"guidance,omitempty"`
	Sampler        string   `json:"sampler,omitempty"`
	Strength       *float64 `json:"strength,omitempty"`
	AllowAdjust    bool     `json:"allow_adjust,omitempty"`
}

var (
	editText = []string{"prompt", "model", "n", "size", "response_format", "quality", "user", "output_format", "background",
		"output_compression", "input_fidelity", "partial_images", "stream", "negative_prompt", "seed", "steps", "guidance",
		"sampler", "strength", "mask_blur", "inpaint_fill", "inpaint_full_res", "inpaint_full_res_padding", "allow_adjust"}
	variationText = []string{"model", "n", "size", "response_format", "user", "prompt", "negative_prompt", "seed", "steps",
		"guidance", "sampler", "strength", "allow_adjust"}
)

// readEdit fills an EditRequest's fields from a form.
func readEdit(f *form) (EditRequest, *apierr.Error) {
	var e EditRequest
	for name, to := range map[string]*string{"prompt": &e.Prompt, "model": &e.Model, "size": &e.Size,
		"response_format": &e.ResponseFormat, "quality": &e.Quality, "user": &e.User, "output_format": &e.OutputFormat,
		"background": &e.Background, "input_fidelity": &e.InputFidelity, "negative_prompt": &e.NegativePrompt,
		"sampler": &e.Sampler, "inpaint_fill": &e.InpaintFill} {
		f.str(name, to)
	}
	err := first(f.intp("n", &e.N), f.intp("output_compression", &e.OutputCompression), f.intp("partial_images", &e.PartialImages),
		f.boolean("stream", &e.Stream), f.uintp("seed", &e.Seed), f.intp("steps", &e.Steps), f.floatp("guidance", &e.Guidance),
		f.floatp("strength", &e.Strength), f.intp("mask_blur", &e.MaskBlur), f.boolean("inpaint_full_res", &e.InpaintFullRes),
		f.intp("inpaint_full_res_padding", &e.InpaintFullResPadding), f.boolean("allow_adjust", &e.AllowAdjust))
	return e, err
}

// readVariation fills a VariationRequest's fields from a form.
func readVariation(f *form) (VariationRequest, *apierr.Error) {
	var v VariationRequest
	for name, to := range map[string]*string{"model": &v.Model, "size": &v.Size, "response_format": &v.ResponseFormat,
		"user": &v.User, "prompt": &v.Prompt, "negative_prompt": &v.NegativePrompt, "sampler": &v.Sampler} {
		f.str(name, to)
	}
	err := first(f.intp("n", &v.N), f.uintp("seed", &v.Seed), f.intp("steps", &v.Steps), f.floatp("guidance", &v.Guidance),
		f.floatp("strength", &v.Strength), f.boolean("allow_adjust", &v.AllowAdjust))
	return v, err
}

// oneImage returns the form's single file of a field.
func oneImage(f *form, field string, required bool) ([]byte, *apierr.Error) {
	files := f.files[field]
	switch {
	case len(files) == 0 && required:
		return nil, apierr.Invalid(field, "%s is required (a PNG file)", field)
	case len(files) > MaxEditImages:
		return nil, apierr.Invalid(field, "Kiln edits %d %s per request, got %d", MaxEditImages, field, len(files))
	case len(files) == 0:
		return nil, nil
	}
	return files[0], nil
}

// Edits handles POST /v1/images/edits for an authenticated tenant.
func (h *Handler) Edits(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	f, aerr := parseForm(w, r, h.maxBody, h.maxBody, []string{"image", "mask"}, editText)
	if aerr != nil {
		WriteError(w, aerr)
		return
	}
	e, aerr := readEdit(f)
	if aerr != nil {
		WriteError(w, aerr)
		return
	}
	jr, aerr := h.editJob(r, f, &e)
	if aerr != nil {
		WriteError(w, aerr)
		return
	}
	h.finish(w, r, p, jr, e.ResponseFormat)
}

// editJob turns an edit into a job request: the image as init image and
// the mask's (or the image's) transparency as the inpainting mask.
func (h *Handler) editJob(r *http.Request, f *form, e *EditRequest) (*validate.JobRequest, *apierr.Error) {
	if e.Stream {
		return nil, apierr.Invalid("stream", "streaming edits are not supported; leave stream false")
	}
	if e.PartialImages != nil && (*e.PartialImages < 0 || *e.PartialImages > 3) {
		return nil, apierr.Invalid("partial_images", "partial_images must be from 0 to 3")
	}
	switch e.InputFidelity {
	case "", "low", "high":
	default:
		return nil, apierr.Invalid("input_fidelity", "input_fidelity must be low or high")
	}
	imgData, aerr := oneImage(f, "image", true)
	if aerr != nil {
		return nil, aerr
	}
	maskData, aerr := oneImage(f, "mask", false)
	if aerr != nil {
		return nil, aerr
	}
	jr, aerr := h.convert(&GenerationRequest{Prompt: e.Prompt, Model: e.Model, N: e.N, Size: e.Size, ResponseFormat: e.ResponseFormat,
		Quality: e.Quality, User: e.User, OutputFormat: e.OutputFormat, Background: e.Background, OutputCompression: e.OutputCompression,
		NegativePrompt: e.NegativePrompt, Seed: e.Seed, Steps: e.Steps, Guidance: e.Guidance, Sampler: e.Sampler, AllowAdjust: e.AllowAdjust})
	if aerr != nil {
		return nil, aerr
	}
	img, aerr := h.b.DecodeImage(r.Context(), "image", imgData)
	if aerr != nil {
		return nil, aerr
	}
	var mask *image.Gray
	if maskData != nil {
		if !bytes.HasPrefix(maskData, []byte("\x89PNG\r\n\x1a\n")) {
			return nil, apierr.Invalid("mask", "mask must be a PNG with an alpha channel (transparent = repaint)")
		}
		m, aerr := h.b.DecodeImage(r.Context(), "mask", maskData)
		if aerr != nil {
			return nil, aerr
		}
		if m.Bounds().Size() != img.Bounds().Size() {
			return nil, apierr.Invalid("mask", "mask is %dx%d but image is %dx%d; they must have the same size",
				m.Bounds().Dx(), m.Bounds().Dy(), img.Bounds().Dx(), img.Bounds().Dy())
		}
		var transparent bool
		if mask, transparent = imageio.AlphaMask(m); !transparent {
			return nil, apierr.Invalid("mask", "the mask has no transparent pixels: its transparent (alpha 0) areas mark what to repaint")
		}
	} else if m, transparent := imageio.AlphaMask(img); transparent {
		mask = m
	}
	jr.InitImage = base64.StdEncoding.EncodeToString(imgData)
	jr.Strength = e.Strength
	if mask != nil {
		var buf bytes.Buffer
		enc := png.Encoder{CompressionLevel: png.BestSpeed}
		if err := enc.Encode(&buf, mask); err != nil {
			return nil, apierr.New(http.StatusInternalServerError, apierr.CodeInternal, "mask", "encoding the mask: %v", err)
		}
		jr.Mask = base64.StdEncoding.EncodeToString(buf.Bytes())
		jr.MaskBlur, jr.InpaintFill = e.MaskBlur, e.InpaintFill
		jr.InpaintFullRes, jr.InpaintFullResPadding = e.InpaintFullRes, e.InpaintFullResPadding
		if jr.Strength == nil {
			s := MaskedEditStrength
			jr.Strength = &s
		}
	} else if e.MaskBlur != nil || e.InpaintFill != "" || e.InpaintFullRes || e.InpaintFullResPadding != nil {
		return nil, apierr.Invalid("mask", "mask_blur, inpaint_fill and inpaint_full_res need a mask (or transparent pixels in the image)")
	}
	return jr, nil
}

// Variations handles POST /v1/images/variations for an authenticated
// tenant.
func (h *Handler) Variations(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	f, aerr := parseForm(w, r, h.maxBody, h.maxBody, []string{"image"}, variationText)
	if aerr != nil {
		WriteError(w, aerr)
		return
	}
	v, aerr := readVariation(f)
	if aerr != nil {
		WriteError(w, aerr)
		return
	}
	jr, aerr := h.variationJob(r, f, &v)
	if aerr != nil {
		WriteError(w, aerr)
		return
	}
	h.finish(w, r, p, jr, v.ResponseFormat)
}

// variationJob turns a variation into an img2img job request.
func (h *Handler) variationJob(r *http.Request, f *form, v *VariationRequest) (*validate.JobRequest, *apierr.Error) {
	imgData, aerr := oneImage(f, "image", true)
	if aerr != nil {
		return nil, aerr
	}
	prompt, negative := v.Prompt, v.NegativePrompt
	if prompt == "" {
		// The image's own prompt, when Kiln or AUTOMATIC1111 made it.
		if text, err := imageio.ReadParameters(bytes.NewReader(imgData)); err == nil && text != "" {
			if ps, err := imageio.ParseParameters(text); err == nil {
				prompt = ps.Prompt
				if negative == "" {
					negative = ps.NegativePrompt
				}
			}
		}
	}
	jr, aerr := h.convert(&GenerationRequest{Prompt: prompt, Model: v.Model, N: v.N, Size: v.Size, ResponseFormat: v.ResponseFormat,
		User: v.User, NegativePrompt: negative, Seed: v.Seed, Steps: v.Steps, Guidance: v.Guidance, Sampler: v.Sampler, AllowAdjust: v.AllowAdjust})
	if aerr != nil {
		return nil, aerr
	}
	if _, aerr := h.b.DecodeImage(r.Context(), "image", imgData); aerr != nil {
		return nil, aerr
	}
	jr.InitImage = base64.StdEncoding.EncodeToString(imgData)
	jr.AllowEmptyPrompt = true // a variation may be guided by the image alone
	jr.Strength = v.Strength
	if jr.Strength == nil {
		s := VariationStrength
		jr.Strength = &s
	}
	return jr, nil
}
