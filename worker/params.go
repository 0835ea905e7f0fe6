package worker

import (
	"bytes"
	"image"
	"strconv"

	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/core/sample"
	"github.com/kiln-project/kiln/server/jobs"
)

// parameters describes a job's image as AUTOMATIC1111 records it in the
// "parameters" PNG chunk (imageio.Parameters formats it).
func parameters(p jobs.Params, seed uint64, width, height int) imageio.Parameters {
	ps := imageio.Parameters{Prompt: p.Prompt, NegativePrompt: p.NegativePrompt}
	ps.Set("Steps", strconv.Itoa(p.Steps))
	ps.Set("Sampler", sample.Label(p.Sampler))
	ps.Set("CFG scale", strconv.FormatFloat(p.Guidance, 'g', -1, 64))
	ps.Set("Seed", strconv.FormatUint(seed, 10))
	ps.Set("Size", strconv.Itoa(width)+"x"+strconv.Itoa(height))
	ps.Set("Model", p.Model)
	if p.ClipSkip > 1 {
		ps.Set("Clip skip", strconv.Itoa(p.ClipSkip))
	}
	if p.InitImage != "" {
		ps.Set("Denoising strength", strconv.FormatFloat(p.Strength, 'g', -1, 64))
	}
	ps.Set("Version", "kiln")
	return ps
}

// encodePNG encodes one finished image with its parameters chunk.
func encodePNG(img image.Image, ps imageio.Parameters) ([]byte, error) {
	var buf bytes.Buffer
	if err := imageio.WritePNG(&buf, img, imageio.Text{Key: imageio.ParametersKey, Value: ps.String()}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
