package family

import "context"

// TiledDecoder is implemented by models whose latent codec can decode in
// tiles, holding one tile's activations on the backend at a time. The
// pipeline uses it for images above its tiling threshold; the result
// equals DecodeLatents' up to float rounding.
type TiledDecoder interface {
	// DecodeLatentsTiled decodes like DecodeLatents with tiles of side
	// tile pixels (0: the codec's default).
	DecodeLatentsTiled(ctx context.Context, latents []float32, shape [4]int, tile int) (pixels []float32, pixelShape [4]int, err error)
}

// TiledEncoder is implemented by models whose latent codec can encode in
// tiles, holding one tile's activations on the backend at a time. The
// pipeline uses it for images above its tiling threshold; the result
// equals EncodeImage's up to float rounding.
type TiledEncoder interface {
	// EncodeImageTiled encodes like EncodeImage with tiles of side tile
	// pixels (0: the codec's default).
	EncodeImageTiled(ctx context.Context, pixels []float32, shape [4]int, tile int) (mean, logvar []float32, latentShape [4]int, err error)
}
