package modeltest_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/model/modeltest"
	"github.com/kiln-project/kiln/core/model/unet"
	"github.com/kiln-project/kiln/core/model/vae"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// BenchmarkFixtureLoadAndRun loads the sd15-tiny UNet and VAE from the
// fixture folder and runs one UNet forward (batch 2, 16×16) and one VAE
// decode (64×64), reporting the process's peak RSS and CPU time. Run it
// alone (-run NONE -bench FixtureLoadAndRun -benchtime 1x) so that the peak
// belongs to it.
func BenchmarkFixtureLoadAndRun(b *testing.B) {
	dir := fixtures.Require(b, "sd15-tiny/model")
	rss0 := modeltest.PeakRSS()
	cpu0 := modeltest.CPUTime()
	for b.Loop() {
		be := cpu.New()
		js, err := os.ReadFile(filepath.Join(dir, "unet", "config.json"))
		if err != nil {
			b.Fatal(err)
		}
		ucfg, err := unet.ParseConfig(js)
		if err != nil {
			b.Fatal(err)
		}
		uw, err := safetensors.Open(filepath.Join(dir, "unet", "diffusion_pytorch_model.safetensors"))
		if err != nil {
			b.Fatal(err)
		}
		u, err := unet.New(be, ucfg, uw)
		if err != nil {
			b.Fatal(err)
		}
		js, err = os.ReadFile(filepath.Join(dir, "vae", "config.json"))
		if err != nil {
			b.Fatal(err)
		}
		vcfg, err := vae.ParseConfig(js)
		if err != nil {
			b.Fatal(err)
		}
		vw, err := safetensors.Open(filepath.Join(dir, "vae", "diffusion_pytorch_model.safetensors"))
		if err != nil {
			b.Fatal(err)
		}
		v, err := vae.New(be, vcfg, vw)
		if err != nil {
			b.Fatal(err)
		}
		sample := make([]float32, 2*4*16*16)
		cond := make([]float32, 2*77*ucfg.ContextDim())
		if _, err := u.Forward(context.Background(), sample, [4]int{2, 4, 16, 16}, []float32{999, 421}, cond, 77); err != nil {
			b.Fatal(err)
		}
		if _, _, err := v.Decode(context.Background(), make([]float32, 4*16*16), [4]int{1, 4, 16, 16}); err != nil {
			b.Fatal(err)
		}
		uw.Close()
		vw.Close()
	}
	b.ReportMetric(modeltest.PeakRSS(), "peak-RSS-MiB")
	b.ReportMetric(rss0, "RSS-before-MiB")
	b.ReportMetric(float64(modeltest.CPUTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
}
