package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/kiln-project/kiln/core/checkpoint"
)

// LatentRGB is a linear map from a family's latents (in the sampler's
// space, after the VAE's scaling) to RGB in [-1, 1], the cheap
// approximation of the VAE decoder that live previews use:
// rgb = Σ_c latent[c]·Factors[c] + Bias.
type LatentRGB struct {
	Factors [][3]float64 `json:"factors"`
	Bias    [3]float64   `json:"bias"`
}

// LatentRGBFile is where a diffusers folder may ship its own map (as the
// built-in model does, fitted from its VAE by tools/latentfit).
const LatentRGBFile = "vae/latent_rgb.json"

// latentFamily supplies a model family's preview map. Families add one
// entry to latentFamilies; the first whose match accepts the model's
// configs wins.
type latentFamily struct {
	name  string
	match func(unet map[string]any, latentChannels int) bool
	rgb   LatentRGB
}

// latentFamilies are the published maps (the coefficients ComfyUI and
// others use for these VAEs), most specific first.
var latentFamilies = []latentFamily{
	{"sdxl", func(u map[string]any, ch int) bool { return ch == 4 && u["addition_embed_type"] == "text_time" },
		LatentRGB{Factors: [][3]float64{
			{0.3651, 0.4232, 0.4341},
			{-0.2533, -0.0042, 0.1068},
			{0.1076, 0.1111, -0.0362},
			{-0.3165, -0.2492, -0.2188},
		}, Bias: [3]float64{0.1084, -0.0175, -0.0011}}},
	{"sd1", func(_ map[string]any, ch int) bool { return ch == 4 },
		LatentRGB{Factors: [][3]float64{
			{0.3512, 0.2297, 0.3227},
			{0.3250, 0.4974, 0.2350},
			{-0.2829, 0.1762, 0.2721},
			{-0.2120, -0.2616, -0.7177},
		}}},
}

// latentRGBFor picks a model's preview map: its own file, else its
// family's; nil when none fits (no previews).
func latentRGBFor(m *checkpoint.Model, latentChannels int) (*LatentRGB, error) {
	if m.Layout == checkpoint.LayoutDiffusers {
		data, err := os.ReadFile(filepath.Join(m.Path, LatentRGBFile))
		switch {
		case err == nil:
			var own LatentRGB
			if err := json.Unmarshal(data, &own); err != nil {
				return nil, fmt.Errorf("pipeline: %s: %w", LatentRGBFile, err)
			}
			if len(own.Factors) != latentChannels {
				return nil, fmt.Errorf("pipeline: %s has %d rows of factors; the VAE has %d latent channels", LatentRGBFile, len(own.Factors), latentChannels)
			}
			return &own, nil
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("pipeline: %w", err)
		}
	}
	var u map[string]any
	_ = json.Unmarshal(m.UNetConfig, &u)
	for _, f := range latentFamilies {
		if f.match(u, latentChannels) {
			rgb := f.rgb
			return &rgb, nil
		}
	}
	return nil, nil
}

// preview maps the predicted clean latents through the latent-to-RGB map:
// one pixel per latent position, the images side by side.
func preview(x0 []float32, shape [4]int, m LatentRGB) *image.RGBA {
	n, c, h, w := shape[0], shape[1], shape[2], shape[3]
	if c != len(m.Factors) || len(x0) != n*c*h*w {
		return nil
	}
	im := image.NewRGBA(image.Rect(0, 0, n*w, h))
	plane := h * w
	for i := 0; i < n; i++ {
		base := i * c * plane
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				rgb := m.Bias
				for ch := 0; ch < c; ch++ {
					v := float64(x0[base+ch*plane+y*w+x])
					for k := 0; k < 3; k++ {
						rgb[k] += v * m.Factors[ch][k]
					}
				}
				o := im.PixOffset(i*w+x, y)
				for k := 0; k < 3; k++ {
					im.Pix[o+k] = uint8(min(max((rgb[k]+1)/2*255, 0), 255))
				}
				im.Pix[o+3] = 255
			}
		}
	}
	return im
}
