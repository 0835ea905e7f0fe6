// Command latentfit fits the latent-to-RGB map that live previews use for
// a model: it renders scenes of the built-in model's scene language
// (tools/train/scenes), encodes them with the model's VAE into the
// sampler's latent space (posterior mean, scaled as the VAE config says),
// averages each image over the VAE's pixel blocks and solves the least
// squares problem rgb ≈ Σ latent[c]·factors[c] + bias, with rgb in
// [-1, 1]. It prints the JSON that a model ships as vae/latent_rgb.json.
//
//	go run ./tools/latentfit --model models/kiln-shapes > models/kiln-shapes/vae/latent_rgb.json
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/checkpoint"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/model/vae"
	"github.com/kiln-project/kiln/tools/train/scenes"
)

func main() {
	model := flag.String("model", "models/kiln-shapes", "diffusers folder of the model")
	n := flag.Int("n", 48, "scenes to encode")
	size := flag.Int("size", 128, "scene size in pixels")
	seed := flag.Uint64("seed", 1, "scene seed")
	flag.Parse()
	rgb, residual, sd1, err := fit(context.Background(), *model, *n, *size, *seed)
	if err != nil {
		fmt.Fprintln(os.Stderr, "latentfit:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "latentfit: RMS error %.4f with the fitted map, %.4f with SD 1.x's (RGB in [-1, 1])\n", residual, sd1)
	out, _ := json.MarshalIndent(rgb, "", "  ")
	fmt.Println(string(out))
}

// sd1Map is SD 1.x's published map, the baseline the fit is compared with.
var sd1Map = family.LatentRGB{Factors: [][3]float64{
	{0.3512, 0.2297, 0.3227}, {0.3250, 0.4974, 0.2350}, {-0.2829, 0.1762, 0.2721}, {-0.2120, -0.2616, -0.7177}}}

func fit(ctx context.Context, modelDir string, n, size int, seed uint64) (out family.LatentRGB, rms, baseline float64, err error) {
	m, err := checkpoint.Load(modelDir, checkpoint.Options{})
	if err != nil {
		return family.LatentRGB{}, 0, 0, err
	}
	defer m.Close()
	cfg, err := vae.ParseConfig(m.VAEConfig)
	if err != nil {
		return family.LatentRGB{}, 0, 0, err
	}
	v, err := vae.New(cpu.New(), cfg, m.VAE)
	if err != nil {
		return family.LatentRGB{}, 0, 0, err
	}
	f := cfg.Factor()
	c := cfg.LatentChannels
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	// Normal equations of [latent, 1] → rgb.
	k := c + 1
	ata := make([]float64, k*k)
	atb := make([][3]float64, k)
	var rows [][]float64
	var targets [][3]float64
	for i := 0; i < n; i++ {
		img, err := scenes.Render(scenes.Random(r, 0.3), size, r)
		if err != nil {
			return family.LatentRGB{}, 0, 0, err
		}
		px := make([]float32, 3*size*size)
		for y := 0; y < size; y++ {
			for x := 0; x < size; x++ {
				o := img.PixOffset(x, y)
				for ch := 0; ch < 3; ch++ {
					px[ch*size*size+y*size+x] = float32(img.Pix[o+ch])/127.5 - 1
				}
			}
		}
		mean, _, ls, err := v.Encode(ctx, px, [4]int{1, 3, size, size})
		if err != nil {
			return family.LatentRGB{}, 0, 0, err
		}
		if err := cfg.Normalize(mean, ls); err != nil {
			return family.LatentRGB{}, 0, 0, err
		}
		h, w := ls[2], ls[3]
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				row := make([]float64, k)
				for ch := 0; ch < c; ch++ {
					row[ch] = float64(mean[ch*h*w+y*w+x])
				}
				row[c] = 1
				var t [3]float64
				for dy := 0; dy < f; dy++ {
					for dx := 0; dx < f; dx++ {
						for ch := 0; ch < 3; ch++ {
							t[ch] += float64(px[ch*size*size+(y*f+dy)*size+x*f+dx])
						}
					}
				}
				for ch := range t {
					t[ch] /= float64(f * f)
				}
				for a := 0; a < k; a++ {
					for b := 0; b < k; b++ {
						ata[a*k+b] += row[a] * row[b]
					}
					for ch := 0; ch < 3; ch++ {
						atb[a][ch] += row[a] * t[ch]
					}
				}
				rows, targets = append(rows, row), append(targets, t)
			}
		}
	}
	sol, err := solve(ata, atb, k)
	if err != nil {
		return family.LatentRGB{}, 0, 0, err
	}
	out = family.LatentRGB{Factors: make([][3]float64, c)}
	for ch := 0; ch < c; ch++ {
		out.Factors[ch] = round(sol[ch])
	}
	out.Bias = round(sol[c])
	baseline = -1
	if c == len(sd1Map.Factors) {
		baseline = rmsError(sd1Map, rows, targets)
	}
	return out, rmsError(out, rows, targets), baseline, nil
}

// rmsError is a map's RMS error over latent rows ([latent, 1]) and their
// block-mean colours.
func rmsError(m family.LatentRGB, rows [][]float64, targets [][3]float64) float64 {
	var sq float64
	for i, row := range rows {
		for ch := 0; ch < 3; ch++ {
			p := m.Bias[ch]
			for a := range m.Factors {
				p += row[a] * m.Factors[a][ch]
			}
			d := p - targets[i][ch]
			sq += d * d
		}
	}
	return math.Sqrt(sq / float64(3*len(rows)))
}

func round(v [3]float64) [3]float64 {
	for i := range v {
		v[i] = math.Round(v[i]*1e4) / 1e4
	}
	return v
}

// solve solves the k×k system a·x = b (three right-hand sides) by
// Gaussian elimination with partial pivoting.
func solve(a []float64, b [][3]float64, k int) ([][3]float64, error) {
	a = append([]float64(nil), a...)
	b = append([][3]float64(nil), b...)
	for col := 0; col < k; col++ {
		p := col
		for r := col + 1; r < k; r++ {
			if math.Abs(a[r*k+col]) > math.Abs(a[p*k+col]) {
				p = r
			}
		}
		if math.Abs(a[p*k+col]) < 1e-12 {
			return nil, fmt.Errorf("singular system (latent channel %d carries nothing)", col)
		}
		for j := 0; j < k; j++ {
			a[col*k+j], a[p*k+j] = a[p*k+j], a[col*k+j]
		}
		b[col], b[p] = b[p], b[col]
		for r := 0; r < k; r++ {
			if r == col {
				continue
			}
			f := a[r*k+col] / a[col*k+col]
			for j := col; j < k; j++ {
				a[r*k+j] -= f * a[col*k+j]
			}
			for ch := 0; ch < 3; ch++ {
				b[r][ch] -= f * b[col][ch]
			}
		}
	}
	x := make([][3]float64, k)
	for r := 0; r < k; r++ {
		for ch := 0; ch < 3; ch++ {
			x[r][ch] = b[r][ch] / a[r*k+r]
		}
	}
	return x, nil
}
