//go:build wasip1

// Command guest is the module of Kiln's built-in policies (batching,
// eviction, quality), compiled to policies/builtin.wasm by
// scripts/build-wasm.sh. It runs exactly the code of policies/builtin,
// which is also the host's native fallback.
package main

import (
	"github.com/kiln-project/kiln/policies/builtin"
	"github.com/kiln-project/kiln/policies/sdk"
)

//go:wasmexport kiln_batching
func batching(ptr, n int32) int64 {
	return sdk.Batching(ptr, n, func(in *sdk.BatchingInput) (sdk.BatchingOutput, error) {
		return builtin.Batching(in), nil
	})
}

//go:wasmexport kiln_eviction
func eviction(ptr, n int32) int64 {
	return sdk.Eviction(ptr, n, func(in *sdk.EvictionInput) (sdk.EvictionOutput, error) {
		return builtin.Eviction(in), nil
	})
}

//go:wasmexport kiln_quality
func quality(ptr, n int32) int64 {
	return sdk.Quality(ptr, n, func(in *sdk.QualityInput) (sdk.QualityOutput, error) {
		return builtin.Quality(in), nil
	})
}

func main() {}
