package pipeline

import (
	"context"
	"fmt"

	"github.com/kiln-project/kiln/core/family"
)

// DefaultTileAbove is the number of pixels (width × height summed over the
// images of one decode or encode call) above which the pipeline decodes
// latents and encodes images in tiles when the model can
// (family.TiledDecoder, family.TiledEncoder): about where a whole SD VAE
// decode's activations outgrow a few GiB.
const DefaultTileAbove = 1024 * 1024

// SetTiling sets when latents are decoded and images encoded in tiles:
// above `above` pixels per call (0: DefaultTileAbove; negative: never), with tiles of
// side `tile` pixels (0: the codec's default). Like the rest of the
// pipeline it must not be called while a job runs.
func (p *Pipeline) SetTiling(above, tile int) {
	p.tileAbove, p.tile = above, tile
}

// decodeLatents decodes (N, C, h, w) latents in the codec's scale, in tiles
// when the images are large and the model can.
func (p *Pipeline) decodeLatents(ctx context.Context, z []float32, shape [4]int) ([]float32, [4]int, error) {
	above := p.tileAbove
	if above == 0 {
		above = DefaultTileAbove
	}
	f := p.def.Factor
	pixels := shape[0] * shape[2] * f * shape[3] * f
	if td, ok := p.m.(family.TiledDecoder); ok && above > 0 && pixels > above {
		img, ishape, err := td.DecodeLatentsTiled(ctx, z, shape, p.tile)
		if err != nil {
			return nil, ishape, fmt.Errorf("tiled: %w", err)
		}
		return img, ishape, nil
	}
	return p.m.DecodeLatents(ctx, z, shape)
}

// encodeImage encodes (N, 3, H, W) pixels in [-1, 1] to the posterior's
// mean and log-variance, in tiles when the images are large and the model
// can.
func (p *Pipeline) encodeImage(ctx context.Context, px []float32, shape [4]int) ([]float32, []float32, [4]int, error) {
	above := p.tileAbove
	if above == 0 {
		above = DefaultTileAbove
	}
	if te, ok := p.m.(family.TiledEncoder); ok && above > 0 && shape[0]*shape[2]*shape[3] > above {
		mean, logvar, lshape, err := te.EncodeImageTiled(ctx, px, shape, p.tile)
		if err != nil {
			return nil, nil, lshape, fmt.Errorf("tiled: %w", err)
		}
		return mean, logvar, lshape, nil
	}
	return p.m.EncodeImage(ctx, px, shape)
}

// sizeWarnings notes a text-to-image size far from the model's native one:
// the denoiser, trained at its native size, then repeats the subject
// across the canvas (larger) or loses it (smaller). Image-to-image keeps
// the init image's layout, so it is not warned about.
func (p *Pipeline) sizeWarnings(j *job) []string {
	if j.img2img || j.req.InitLatents != nil {
		return nil
	}
	w, h := j.req.Width, j.req.Height
	nw, nh := p.def.Width, p.def.Height
	if 2*w > 3*nw || 2*h > 3*nh {
		return []string{fmt.Sprintf("size %dx%d is far above the model's native %dx%d: expect repeated subjects; generate at the native size and upscale (hires fix) instead", w, h, nw, nh)}
	}
	if 2*w < nw || 2*h < nh {
		return []string{fmt.Sprintf("size %dx%d is far below the model's native %dx%d: expect poor images", w, h, nw, nh)}
	}
	return nil
}
