package modeltest_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/model/unet"
	"github.com/kiln-project/kiln/core/model/vae"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// peakRSS returns the process's peak resident set in MiB (VmHWM, or
// getrusage's maxrss where /proc is absent).
func peakRSS() float64 {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
				if err == nil {
					return kb / 1024
				}
			}
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		return float64(ru.Maxrss) / 1024
	}
	return 0
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFixtureLoadAndRun loads the sd15-tiny UNet and VAE from the
// fixture folder and runs one UNet forward (batch 2, 16×16) and one VAE
// decode (64×64), reporting the process's peak RSS and CPU time. Run it
// alone (-run NONE -bench FixtureLoadAndRun -benchtime 1x) so that the peak
// belongs to it.
func BenchmarkFixtureLoadAndRun(b *testing.B) {
	dir := fixtures.Require(b, "sd15-tiny/model")
	rss0 := peakRSS()
	cpu0 := cpuTime()
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
	b.ReportMetric(peakRSS(), "peak-RSS-MiB")
	b.ReportMetric(rss0, "RSS-before-MiB")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
}
