package worker

import (
	"bytes"
	"context"
	"image"

	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/internal/buildinfo"
	"github.com/kiln-project/kiln/server/jobs"
)

// parametersText formats a job's image as AUTOMATIC1111 writes it into the
// "parameters" PNG chunk, through the same imageio.Generation the CLI uses
// (the worker's noise comes from torch's CPU generator).
func (w *Worker) parametersText(ctx context.Context, p jobs.Params, seed uint64, width, height int) string {
	return generation(p, seed, width, height, w.modelHash(ctx, p.Model)).Parameters().String()
}

// generation describes one image of a job.
func generation(p jobs.Params, seed uint64, width, height int, modelHash string) imageio.Generation {
	g := imageio.Generation{Prompt: p.Prompt, NegativePrompt: p.NegativePrompt, Steps: p.Steps, Sampler: p.Sampler,
		CFGScale: p.Guidance, Seed: seed, Width: width, Height: height, ModelHash: modelHash, Model: p.Model,
		ClipSkip: p.ClipSkip, RNG: "cpu", Version: "kiln " + buildinfo.Version()}
	if p.InitImage != "" {
		g.DenoisingStrength = p.Strength
	}
	if h := p.Hires; h != nil {
		// A1111 records the first pass's size and the hires settings
		g.Width, g.Height = p.Width, p.Height
		g.DenoisingStrength = h.Denoise
		g.Hires = &imageio.Hires{Scale: h.Scale, Width: h.Width, Height: h.Height, Steps: h.Steps, Upscaler: h.Upscaler}
	}
	for _, l := range p.LoRAs {
		if g.LoraHashes == nil {
			g.LoraHashes = map[string]string{}
		}
		g.LoraHashes[l.Name] = l.Hash[:min(12, len(l.Hash))]
	}
	for _, e := range p.Embeddings {
		if g.TIHashes == nil {
			g.TIHashes = map[string]string{}
		}
		g.TIHashes[e.Name] = e.Hash[:min(12, len(e.Hash))]
	}
	return g
}

// modelHash is the model's short hash, or "" when it cannot be computed.
func (w *Worker) modelHash(ctx context.Context, name string) string {
	m, ok := w.o.Models.Get(name)
	if !ok {
		return ""
	}
	h, err := w.hashes.Short(ctx, m.Path)
	if err != nil {
		w.log.Warn("model hash", "model", name, "err", err)
		return ""
	}
	return h
}

// encodePNG encodes one finished image with its parameters chunk.
func encodePNG(img image.Image, parameters string) ([]byte, error) {
	var buf bytes.Buffer
	if err := imageio.WritePNG(&buf, img, imageio.Text{Key: imageio.ParametersKey, Value: parameters}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
