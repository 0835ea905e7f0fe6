//go:build wasip1

package sdk

import (
	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/kiln-project/kiln/wasmhost/guest"
)

// Reused input messages: decoding into them allocates nothing once their
// slices have grown, and their strings share the input buffer. They are
// valid only until the hook returns (see the package documentation).
var (
	batchingIn BatchingInput
	evictionIn EvictionInput
)

// Batching serves one call of the batching hook with fn.
func Batching(ptr, n int32, fn func(*BatchingInput) (BatchingOutput, error)) int64 {
	return guest.Serve(ptr, n, func(in, out []byte) []byte {
		if err := abi.DecodeBatchingInputInto(in, &batchingIn, true); err != nil {
			return abi.EncodeError(out, err.Error())
		}
		ans, err := fn(&batchingIn)
		if err != nil {
			return abi.EncodeError(out, err.Error())
		}
		return abi.EncodeBatchingOutput(out, &ans)
	})
}

// Eviction serves one call of the eviction hook with fn.
func Eviction(ptr, n int32, fn func(*EvictionInput) (EvictionOutput, error)) int64 {
	return guest.Serve(ptr, n, func(in, out []byte) []byte {
		if err := abi.DecodeEvictionInputInto(in, &evictionIn, true); err != nil {
			return abi.EncodeError(out, err.Error())
		}
		ans, err := fn(&evictionIn)
		if err != nil {
			return abi.EncodeError(out, err.Error())
		}
		return abi.EncodeEvictionOutput(out, &ans)
	})
}

// Quality serves one call of the quality hook with fn.
func Quality(ptr, n int32, fn func(*QualityInput) (QualityOutput, error)) int64 {
	return guest.Serve(ptr, n, func(in, out []byte) []byte {
		msg, minor, err := abi.DecodeQualityInputMinor(in)
		if err != nil {
			return abi.EncodeError(out, err.Error())
		}
		ans, err := fn(&msg)
		if err != nil {
			return abi.EncodeError(out, err.Error())
		}
		return abi.EncodeQualityOutputAt(out, &ans, minor)
	})
}
