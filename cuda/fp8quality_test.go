package cuda_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/kiln-project/kiln/bench"
	"github.com/kiln-project/kiln/core/model/families"
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// TestFP8Quality generates the same images (synthetic SD 1.5 weights, 512²,
// 20 Euler steps, CFG 7.5, two seeds) with Precision "fp16" and "fp8" on
// cuda:0 and reports the fp8 profile's latent relative error and image PSNR
// against fp16; it fails above the 3% latent error the fp8 profile
// promises. GPU only, with KILN_FP8_QUALITY=1 (it loads an 860 M-parameter
// UNet twice).
func TestFP8Quality(t *testing.T) {
	if os.Getenv("KILN_FP8_QUALITY") != "1" {
		t.Skip("set KILN_FP8_QUALITY=1 on a GPU machine")
	}
	m, size, cleanup, err := bench.Synthetic("sd15", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	defer m.Close()
	req := pipeline.Request{Prompt: "a lighthouse on a cliff at dusk", Width: size, Height: size, Steps: 20, N: 2, Guidance: 7.5, Sampler: "euler", Seed: 11}
	res := map[string]*pipeline.Result{}
	for _, prec := range []string{"fp16", "fp8"} {
		res[prec] = func() *pipeline.Result {
			o := cuda.DefaultOptions()
			o.Precision = prec
			dev, err := cuda.Open(0, o)
			if err != nil {
				t.Skipf("no GPU: %v", err)
			}
			defer dev.Close()
			if prec == "fp8" && !dev.FP8() {
				t.Skip("this device has no fp8 products (needs sm_90 and the Hopper image)")
			}
			cp, err := families.FromCheckpoint(m)
			if err != nil {
				t.Fatal(err)
			}
			md, err := cp.Build(dev.Backend(tensor.F16))
			if err != nil {
				t.Fatal(err)
			}
			p, err := pipeline.New(md)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			r, err := p.Generate(context.Background(), req, nil)
			if err != nil {
				t.Fatalf("%s: %v", prec, err)
			}
			return r
		}()
	}
	lat := fixtures.RelErr(res["fp8"].Latents, res["fp16"].Latents)
	var se float64
	a, b := res["fp8"].Pixels, res["fp16"].Pixels
	for i := range a {
		d := float64(a[i] - b[i])
		se += d * d
	}
	psnr := 10 * math.Log10(1/(se/float64(len(a))))
	msg := fmt.Sprintf("fp8 vs fp16 (synthetic sd15, %d², 20 Euler, CFG 7.5, 2 images): latent relative error %.4f, image PSNR %.2f dB", size, lat, psnr)
	t.Log(msg)
	if p := os.Getenv("KILN_FP8_QUALITY_OUT"); p != "" {
		_ = os.WriteFile(p, []byte(msg+"\n"), 0o644)
	}
	if lat > 0.03 || math.IsNaN(lat) {
		t.Errorf("latent relative error %.4f > 0.03", lat)
	}
}
