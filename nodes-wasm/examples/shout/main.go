//go:build wasip1

// Command shout is an example pre-processing node: it upper-cases the
// prompt, and rejects empty prompts with a reason.
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o shout.wasm ./nodes-wasm/examples/shout
package main

import (
	"strings"

	"github.com/kiln-project/kiln/nodes-wasm/sdk"
)

//go:wasmexport kiln_node_pre
func pre(ptr, n int32) int64 { return sdk.Pre(ptr, n, shout) }

func shout(in *sdk.PreInput) (sdk.PreOutput, error) {
	if strings.TrimSpace(in.Prompt) == "" {
		return sdk.PreOutput{Reject: true, Reason: "shout: the prompt is empty"}, nil
	}
	return sdk.PreOutput{
		Prompt: strings.ToUpper(in.Prompt), NegativePrompt: in.NegativePrompt,
		Width: in.Width, Height: in.Height, Steps: in.Steps,
		Guidance: in.Guidance, Sampler: in.Sampler, Seed: in.Seed,
	}, nil
}

func main() {}
