// Package guest is the lowest layer of Kiln's guest SDKs: compiled with
// GOOS=wasip1 GOARCH=wasm it exports the ABI's version marker and
// allocator, keeps the input and output buffers alive between the host's
// calls, and reaches the host's logging and counter functions. The policy
// and node SDKs (policies/sdk, nodes-wasm/sdk) build on it; modules rarely
// import it directly.
//
// Built for any other platform the logging and counter functions do
// nothing, so code shared between a guest and its native twin compiles
// everywhere.
package guest

// Log levels accepted by Log, matching log/slog's numbering.
const (
	LevelDebug = -4
	LevelInfo  = 0
	LevelWarn  = 4
	LevelError = 8
)

// Handler turns one encoded input into an encoded output appended to
// out[:0] (out is a buffer the SDK reuses between calls).
type Handler func(in, out []byte) []byte
