package wasmadapter

import (
	nodeswasm "github.com/kiln-project/kiln/nodes-wasm"
	nodes "github.com/kiln-project/kiln/nodes-wasm/builtin"
	"github.com/kiln-project/kiln/policies"
	"github.com/kiln-project/kiln/policies/builtin"
	"github.com/kiln-project/kiln/wasmhost"
	"github.com/kiln-project/kiln/wasmhost/registry"
)

// Natives returns Kiln's built-in policies and nodes as native Go, the
// defaults the Wasm host falls back to when a module is absent or fails.
func Natives() wasmhost.Natives {
	return wasmhost.Natives{
		Batching: builtin.Batching, Eviction: builtin.Eviction, Quality: builtin.Quality,
		NodeHook: nodes.Hook, NodeParams: nodes.CheckParams, NodePre: nodes.Pre, NodePost: nodes.Post,
	}
}

// Builtins returns the embedded built-in policy and node modules the
// registry loads first.
func Builtins() (policyModule, nodeModule registry.Builtin) {
	return registry.Builtin{Name: policies.BuiltinName, Wasm: policies.Builtin()},
		registry.Builtin{Name: nodeswasm.BuiltinName, Wasm: nodeswasm.Builtin()}
}
