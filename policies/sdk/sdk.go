// Package sdk is the guest SDK for Kiln scheduling policies written in Go
// and compiled with GOOS=wasip1 GOARCH=wasm -buildmode=c-shared. It hides
// the ABI (docs/wasm-abi.md): a policy exports one function per hook that
// hands the raw pointer and length to the SDK together with a plain Go
// function over decoded messages:
//
//	//go:wasmexport kiln_batching
//	func batching(ptr, n int32) int64 { return sdk.Batching(ptr, n, decide) }
//
//	func decide(in *sdk.BatchingInput) (sdk.BatchingOutput, error) {
//		return sdk.BatchingOutput{Jobs: []uint32{0}}, nil
//	}
//
//	func main() {}
//
// The SDK exports the ABI version marker and the allocator, decodes the
// input, encodes the answer (or the error) and keeps the buffers alive.
// Everything a policy needs to decide is in its input: there is no clock,
// filesystem or network, and randomness is deterministic.
//
// The input passed to a hook function is only valid until it returns: its
// strings share the input buffer and its slices are reused by the next
// call (decoding then allocates nothing, which matters under the host's
// deadline checks). Copy what must outlive the call (strings.Clone,
// slices.Clone). Answers should depend only on the input: the host may
// discard an instance, and its state, at any time.
package sdk

import (
	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/kiln-project/kiln/wasmhost/guest"
)

// Message types of the policy hooks, re-exported from the ABI.
type (
	// BatchingInput is the input of the batching hook.
	BatchingInput = abi.BatchingInput
	// BatchingOutput is the answer of the batching hook.
	BatchingOutput = abi.BatchingOutput
	// Job is one queued job.
	Job = abi.Job
	// EvictionInput is the input of the eviction hook.
	EvictionInput = abi.EvictionInput
	// EvictionOutput is the answer of the eviction hook.
	EvictionOutput = abi.EvictionOutput
	// Victim is one model to evict.
	Victim = abi.Victim
	// QualityInput is the input of the quality hook.
	QualityInput = abi.QualityInput
	// QualityOutput is the answer of the quality hook.
	QualityOutput = abi.QualityOutput
)

// Log writes msg to the host's (rate-limited) log at an slog level.
func Log(level int, msg string) { guest.Log(level, msg) }

// Count adds delta to the module's named counter.
func Count(name string, delta int64) { guest.Count(name, delta) }
