// Package rng reproduces the standard normal noise that torch.randn draws,
// so that a seed gives the same starting latents as PyTorch-based tools:
// the CPU generator (mt19937, as ComfyUI draws noise) and the CUDA generator
// (Philox4x32-10, as AUTOMATIC1111 draws noise by default), both computed
// on the host. A Generator keeps its stream position, so consecutive draws
// continue exactly as consecutive torch.randn calls on one torch.Generator.
package rng

import (
	"fmt"
	"strings"
)

// Generator draws float32 samples of the standard normal distribution.
// Each call continues the generator's stream; a Generator is not safe for
// concurrent use.
type Generator interface {
	// Randn returns n samples, as torch.randn(n) would with this generator.
	Randn(n int) []float32
}

// Kinds of generator accepted by New.
const (
	KindCPU  = "cpu"
	KindCUDA = "cuda"
)

// New returns a generator of the named kind ("cpu" or "cuda"; "" means
// "cpu") seeded with seed.
func New(kind string, seed uint64) (Generator, error) {
	switch strings.ToLower(kind) {
	case "", KindCPU:
		return NewCPU(seed), nil
	case KindCUDA, "philox", "gpu":
		return NewPhilox(seed), nil
	}
	return nil, fmt.Errorf("rng: unknown generator %q (want %q or %q)", kind, KindCPU, KindCUDA)
}
