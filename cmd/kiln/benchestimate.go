package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-project/kiln/bench"
	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
)

// sd15StepFLOP is the work of one SD 1.5 UNet step with classifier-free
// guidance (two evaluations) for one 512×512 image; sd15UNetParams is the
// UNet's parameter count. Other UNets are estimated in proportion to their
// parameters and latent area.
const (
	sd15StepFLOP   = 803e9
	sd15UNetParams = 860e6
)

// longBench is the estimated CPU run time above which kiln bench warns.
const longBench = 3 * time.Minute

// estimateBench estimates a benchmark's run time on be from a short
// matrix-product measurement and the models' UNet sizes; ok is false when
// a model's size is unknown.
func estimateBench(be backend.Backend, o bench.Options) (time.Duration, float64, bool) {
	flops := measureFLOPS(be)
	if flops <= 0 {
		return 0, 0, false
	}
	var total float64
	for _, m := range o.Models {
		perStep, ok := stepFLOP(m, o.Size)
		if !ok {
			return 0, flops, false
		}
		if o.Guidance <= 1 {
			perStep /= 2
		}
		steps := float64(o.Warmup+o.Iterations) * float64(o.Steps+1) // +1: the VAE and text encoder, roughly a step
		if o.Components {
			steps += float64(3 * (o.Warmup + o.Iterations))
		}
		for _, b := range o.Batches {
			total += steps * float64(b) * perStep
		}
	}
	return time.Duration(total / flops * float64(time.Second)), flops, true
}

// stepFLOP estimates one guided UNet step of one image for a bench model
// name: a synthetic architecture, or a folder or file by its UNet's
// parameter count (at the given side, 512 when 0).
func stepFLOP(name string, size int) (float64, bool) {
	if arch, ok := strings.CutPrefix(name, bench.SyntheticPrefix); ok {
		a, sz, _ := strings.Cut(arch, "@")
		side := 512
		if a == "sd21" {
			side = 768
		}
		if sz != "" {
			n, err := strconv.Atoi(sz)
			if err != nil {
				return 0, false
			}
			side = n
		}
		if size > 0 {
			side = size
		}
		return sd15StepFLOP * float64(side*side) / (512 * 512), true
	}
	params, native, ok := unetParams(name)
	if !ok {
		return 0, false
	}
	side := native
	if size > 0 {
		side = size
	}
	return sd15StepFLOP * params / sd15UNetParams * float64(side*side) / (512 * 512), true
}

// unetParams counts a model's UNet parameters from its safetensors headers
// (a diffusers folder's unet/, or a single file's diffusion model) and
// guesses its native side (512, or 128 for a UNet under 100M parameters).
func unetParams(path string) (float64, int, bool) {
	var files []string
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		files, _ = filepath.Glob(filepath.Join(path, "unet", "*.safetensors"))
	} else if err == nil {
		files = []string{path}
	}
	single := len(files) == 1 && files[0] == path
	var n float64
	for _, f := range files {
		src, err := safetensors.Open(f)
		if err != nil {
			return 0, 0, false
		}
		for _, name := range src.Names() {
			if single && !strings.HasPrefix(name, "model.diffusion_model.") {
				continue
			}
			if ti, ok := src.Info(name); ok {
				n += float64(ti.Numel())
			}
		}
		src.Close()
	}
	if n == 0 {
		return 0, 0, false
	}
	side := 512
	if n < 100e6 {
		side = 128
	}
	return n, side, true
}

// measureFLOPS times a few float32 matrix products on be and returns the
// best rate in FLOP/s.
func measureFLOPS(be backend.Backend) float64 {
	const m, k, n = 256, 512, 512
	xs := make([]float32, m*k)
	ws := make([]float32, n*k)
	for i := range xs {
		xs[i] = float32(i%7) / 7
	}
	for i := range ws {
		ws[i] = float32(i%5) / 5
	}
	x := be.FromFloat32(tensor.Shape{m, k}, xs)
	w := be.FromFloat32(tensor.Shape{n, k}, ws)
	best := math.Inf(1)
	for range 4 {
		start := time.Now()
		y := be.Linear(x, w, nil)
		_ = be.ToFloat32(y)
		best = min(best, time.Since(start).Seconds())
		be.Free(y)
	}
	be.Free(x, w)
	if best <= 0 || math.IsInf(best, 0) {
		return 0
	}
	return 2 * m * k * n / best
}

// warnLongBench tells the user, before a long CPU run, how long it will
// take and how to shorten it.
func warnLongBench(w io.Writer, est time.Duration, flops float64) {
	fmt.Fprintf(w, "kiln bench: on the CPU (about %.0f GFLOP/s measured) this run needs roughly %s; "+
		"stop it with Ctrl-C, or shorten it with --steps, --batch-sizes, --iterations, --size or --components=false, or run on a GPU (--device cuda)\n",
		flops/1e9, est.Round(time.Minute))
}
