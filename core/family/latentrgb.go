package family

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// LatentRGB is a linear map from a family's latents (in the sampler's
// space, after the codec's scaling) to RGB in [-1, 1], the cheap
// approximation of the decoder that live previews use:
// rgb = Σ_c latent[c]·Factors[c] + Bias.
type LatentRGB struct {
	Factors [][3]float64 `json:"factors"`
	Bias    [3]float64   `json:"bias"`
}

// LatentRGBFile is where a diffusers folder may ship its own map (as the
// built-in model does, fitted from its VAE by tools/latentfit).
const LatentRGBFile = "vae/latent_rgb.json"

// OwnLatentRGB reads the map a model folder ships in LatentRGBFile; nil
// (and no error) when the folder has none.
func OwnLatentRGB(dir string, latentChannels int) (*LatentRGB, error) {
	data, err := os.ReadFile(filepath.Join(dir, LatentRGBFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("family: %w", err)
	}
	var own LatentRGB
	if err := json.Unmarshal(data, &own); err != nil {
		return nil, fmt.Errorf("family: %s: %w", LatentRGBFile, err)
	}
	if len(own.Factors) != latentChannels {
		return nil, fmt.Errorf("family: %s has %d rows of factors; the codec has %d latent channels", LatentRGBFile, len(own.Factors), latentChannels)
	}
	return &own, nil
}
