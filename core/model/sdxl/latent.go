package sdxl

import "github.com/kiln-project/kiln/core/family"

// LatentRGB maps SDXL latents (4 channels, the SDXL VAE) to RGB for
// previews: the published coefficients ComfyUI and others use, with a
// bias. A diffusers folder's own vae/latent_rgb.json takes precedence
// (family.ReadLatentRGB).
var LatentRGB = family.LatentRGB{Factors: [][3]float64{
	{0.3651, 0.4232, 0.4341},
	{-0.2533, -0.0042, 0.1068},
	{0.1076, 0.1111, -0.0362},
	{-0.3165, -0.2492, -0.2188},
}, Bias: [3]float64{0.1084, -0.0175, -0.0011}}
