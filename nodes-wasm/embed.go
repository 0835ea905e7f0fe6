// Package nodeswasm ships Kiln's built-in pre- and post-processing nodes
// as a Wasm module (builtin.wasm, built from nodes-wasm/guest by
// scripts/build-wasm.sh and checked against its source by
// scripts/check-wasm.sh). The logic lives in nodes-wasm/builtin; the guest
// SDK in nodes-wasm/sdk.
package nodeswasm

import _ "embed"

//go:embed builtin.wasm
var builtinWasm []byte

// BuiltinName is the module name the built-in nodes are registered as.
const BuiltinName = "builtin"

// Builtin returns the built-in nodes module. The slice is shared: callers
// must not modify it.
func Builtin() []byte { return builtinWasm }
