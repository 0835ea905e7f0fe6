package sd

import (
	"context"

	"github.com/kiln-project/kiln/core/model/vae"
)

// DecodeLatentsTiled implements family.TiledDecoder.
func (m *Model) DecodeLatentsTiled(ctx context.Context, latents []float32, shape [4]int, tile int) ([]float32, [4]int, error) {
	return m.vae.DecodeTiled(ctx, latents, shape, vae.TileOptions{Tile: tile})
}
