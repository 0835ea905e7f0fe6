//go:build wasip1

// Command guest is the module of Kiln's built-in nodes (style, blocklist,
// resize, crop, watermark, grayscale), compiled to nodes-wasm/builtin.wasm
// by scripts/build-wasm.sh. It runs exactly the code of
// nodes-wasm/builtin, which is also the host's native fallback; the node
// to run is the name in the input.
package main

import (
	"github.com/kiln-project/kiln/nodes-wasm/builtin"
	"github.com/kiln-project/kiln/nodes-wasm/sdk"
)

//go:wasmexport kiln_node_pre
func pre(ptr, n int32) int64 {
	return sdk.Pre(ptr, n, func(in *sdk.PreInput) (sdk.PreOutput, error) {
		return builtin.Pre(in), nil
	})
}

//go:wasmexport kiln_node_post
func post(ptr, n int32) int64 {
	return sdk.Post(ptr, n, func(in *sdk.PostInput) (sdk.PostOutput, error) {
		return builtin.Post(in), nil
	})
}

func main() {}
