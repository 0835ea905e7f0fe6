//go:build wasip1

// Command decodebench measures the cost, inside a Go guest, of decoding a
// batching input in the ABI's binary encoding (the SDK's decoder) and in
// JSON (encoding/json). The host benchmark BenchmarkGuestDecode calls it.
package main

import (
	"encoding/json"

	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/kiln-project/kiln/wasmhost/guest"
)

var binIn abi.BatchingInput

// kiln_batching decodes the binary input and answers job 0.
//
//go:wasmexport kiln_batching
func binary(ptr, n int32) int64 {
	return guest.Serve(ptr, n, func(in, out []byte) []byte {
		if err := abi.DecodeBatchingInputInto(in, &binIn, true); err != nil {
			return abi.EncodeError(out, err.Error())
		}
		return abi.EncodeBatchingOutput(out, &abi.BatchingOutput{Jobs: []uint32{0}})
	})
}

// kiln_quality decodes the same input sent as JSON and answers job 0 in
// the batching output encoding (the host benchmark reads it raw).
//
//go:wasmexport kiln_quality
func jsonDecode(ptr, n int32) int64 {
	return guest.Serve(ptr, n, func(in, out []byte) []byte {
		var msg abi.BatchingInput
		if err := json.Unmarshal(in, &msg); err != nil {
			return abi.EncodeError(out, err.Error())
		}
		return abi.EncodeBatchingOutput(out, &abi.BatchingOutput{Jobs: []uint32{0}})
	})
}

func main() {}
