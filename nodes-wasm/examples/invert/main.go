//go:build wasip1

// Command invert is an example post-processing node: it inverts the
// image's colours (optionally only partly, with the "amount" parameter)
// through the host's colour-matrix operation.
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o invert.wasm ./nodes-wasm/examples/invert
package main

import (
	"errors"
	"strconv"

	"github.com/kiln-project/kiln/nodes-wasm/sdk"
)

//go:wasmexport kiln_node_post
func post(ptr, n int32) int64 { return sdk.Post(ptr, n, invert) }

func invert(in *sdk.PostInput) (sdk.PostOutput, error) {
	a := float32(1)
	if v, ok := sdk.ParamValue(in.Params, "amount"); ok {
		f, err := strconv.ParseFloat(v, 32)
		if err != nil || f < 0 || f > 1 {
			return sdk.PostOutput{Reject: true, Reason: "invert: amount must be a number in 0..1"}, nil
		}
		a = float32(f)
	}
	k := 1 - 2*a // each channel becomes k·c + a·255
	m := [20]float32{k, 0, 0, 0, 255 * a, 0, k, 0, 0, 255 * a, 0, 0, k, 0, 255 * a, 0, 0, 0, 1, 0}
	if err := sdk.ApplyColorMatrix(in.Image, &m); err != nil {
		return sdk.PostOutput{}, errors.New("invert: " + err.Error())
	}
	return sdk.PostOutput{Image: in.Image}, nil
}

func main() {}
