// Package policies ships Kiln's built-in scheduling policies as a Wasm
// module (builtin.wasm, built from policies/guest by scripts/build-wasm.sh
// and checked against its source by scripts/check-wasm.sh). The logic
// lives in policies/builtin; the guest SDK in policies/sdk.
package policies

import _ "embed"

//go:embed builtin.wasm
var builtinWasm []byte

// BuiltinName is the module name the built-in policies are registered as.
const BuiltinName = "builtin"

// Builtin returns the built-in policies module. The slice is shared:
// callers must not modify it.
func Builtin() []byte { return builtinWasm }
