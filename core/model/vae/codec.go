package vae

import "context"

// Codec is a VAE as a model family's latent codec: the encode, decode and
// latent-scaling methods of core/family.Model (and family.TiledDecoder, family.TiledEncoder).
// Families embed it.
type Codec struct{ Net *Model }

// EncodeImage returns the posterior's mean and log-variance of an image.
func (c Codec) EncodeImage(ctx context.Context, pixels []float32, shape [4]int) ([]float32, []float32, [4]int, error) {
	return c.Net.Encode(ctx, pixels, shape)
}

// DecodeLatents decodes latents (in the VAE's own space) to pixels.
func (c Codec) DecodeLatents(ctx context.Context, latents []float32, shape [4]int) ([]float32, [4]int, error) {
	return c.Net.Decode(ctx, latents, shape)
}

// DecodeLatentsTiled decodes in tiles of tile latent pixels (seamless).
func (c Codec) DecodeLatentsTiled(ctx context.Context, latents []float32, shape [4]int, tile int) ([]float32, [4]int, error) {
	return c.Net.DecodeTiled(ctx, latents, shape, TileOptions{Tile: tile})
}

// EncodeImageTiled encodes in tiles of tile pixels (seamless).
func (c Codec) EncodeImageTiled(ctx context.Context, pixels []float32, shape [4]int, tile int) ([]float32, []float32, [4]int, error) {
	return c.Net.EncodeTiled(ctx, pixels, shape, TileOptions{Tile: tile})
}

// ToDenoiser scales (and shifts) VAE latents into the denoiser's space.
func (c Codec) ToDenoiser(latents []float32, shape [4]int) error {
	return c.Net.cfg.Normalize(latents, shape)
}

// FromDenoiser undoes ToDenoiser.
func (c Codec) FromDenoiser(latents []float32, shape [4]int) error {
	return c.Net.cfg.Denormalize(latents, shape)
}
