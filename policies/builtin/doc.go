// Package builtin holds Kiln's built-in scheduling policies as plain Go
// functions over the ABI's messages: Batching, Eviction and Quality. The
// same code is compiled twice: natively, where wasmhost runs it as the
// fallback whenever a Wasm policy fails, and to wasip1 in
// policies/guest, the module Kiln runs by default. A test checks that
// both give identical answers.
//
// Every function is deterministic: its answer depends only on its input.
package builtin
