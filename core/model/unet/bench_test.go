package unet_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/model/modeltest"
	"github.com/kiln-project/kiln/core/model/unet"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// BenchmarkFixtureForward times one forward of the sd15-tiny UNet on the
// reference inputs (batch 2, 16×16 latent, 77 context tokens).
func BenchmarkFixtureForward(b *testing.B) {
	dir := fixtures.Require(b, "sd15-tiny/model/unet")
	js, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := unet.ParseConfig(js)
	if err != nil {
		b.Fatal(err)
	}
	w, err := safetensors.Open(filepath.Join(dir, "diffusion_pytorch_model.safetensors"))
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	m, err := unet.New(cpu.New(), cfg, w)
	if err != nil {
		b.Fatal(err)
	}
	sample := make([]float32, 2*4*16*16)
	cond := make([]float32, 2*77*cfg.ContextDim())
	for i := range sample {
		sample[i] = float32(i%7) - 3
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := m.Forward(context.Background(), sample, [4]int{2, 4, 16, 16}, []float32{999, 421}, cond, 77); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSD15Forward times one forward of an SD 1.5-sized UNet (860 M
// random parameters, 3.4 GB of float32 weights) at a 64×64 latent (a
// 512×512 image), batch 1, 77 context tokens. It is slow on a CPU: run it
// alone, once: go test -run NONE -bench SD15Forward -benchtime 1x
// ./core/model/unet. Skipped with -short.
func BenchmarkSD15Forward(b *testing.B) {
	if testing.Short() {
		b.Skip("SD 1.5-sized UNet skipped in -short mode")
	}
	cfg, err := unet.ParseConfig(modeltest.SD15UNetConfig())
	if err != nil {
		b.Fatal(err)
	}
	infos, err := unet.ExpectedTensors(cfg)
	if err != nil {
		b.Fatal(err)
	}
	src, err := modeltest.NewRandom(infos, 1, "F32")
	if err != nil {
		b.Fatal(err)
	}
	m, err := unet.New(cpu.New(), cfg, src)
	if err != nil {
		b.Fatal(err)
	}
	params := float64(m.Params()) / 1e6
	sample := make([]float32, 4*64*64)
	cond := make([]float32, 77*cfg.ContextDim())
	for i := range sample {
		sample[i] = float32(i%13)/6 - 1
	}
	for i := range cond {
		cond[i] = float32(i%11)/5 - 1
	}
	loadRSS := modeltest.PeakRSS()
	cpu0 := modeltest.CPUTime()
	b.ResetTimer()
	for b.Loop() {
		out, err := m.Forward(context.Background(), sample, [4]int{1, 4, 64, 64}, []float32{500}, cond, 77)
		if err != nil {
			b.Fatal(err)
		}
		for _, v := range out {
			if v != v {
				b.Fatal("NaN in output")
			}
		}
	}
	b.ReportMetric(float64(modeltest.CPUTime()-cpu0)/float64(b.N)/1e9, "cpu-s/op")
	b.ReportMetric(modeltest.PeakRSS(), "peak-RSS-MiB")
	b.ReportMetric(loadRSS, "load-peak-RSS-MiB")
	b.ReportMetric(params, "Mparams")
}
