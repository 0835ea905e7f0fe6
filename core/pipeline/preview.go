package pipeline

import (
	"image"

	"github.com/kiln-project/kiln/core/family"
)

// preview maps the predicted clean latents through the latent-to-RGB map:
// one pixel per latent position, the images side by side.
func preview(x0 []float32, shape [4]int, m family.LatentRGB) *image.RGBA {
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
