//go:build wasip1

package sdk

import (
	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/kiln-project/kiln/wasmhost/guest"
)

// Pre serves one call of the node_pre hook with fn.
func Pre(ptr, n int32, fn func(*PreInput) (PreOutput, error)) int64 {
	return guest.Serve(ptr, n, func(in, out []byte) []byte {
		msg, err := abi.DecodePreInput(in)
		if err != nil {
			return abi.EncodeError(out, err.Error())
		}
		ans, err := fn(&msg)
		if err != nil {
			return abi.EncodeError(out, err.Error())
		}
		return abi.EncodePreOutput(out, &ans)
	})
}

// Post serves one call of the node_post hook with fn. The input image's
// pixels live in the SDK's input buffer: fn may change them in place and
// return the same image.
func Post(ptr, n int32, fn func(*PostInput) (PostOutput, error)) int64 {
	return guest.Serve(ptr, n, func(in, out []byte) []byte {
		msg, err := abi.DecodePostInput(in)
		if err != nil {
			return abi.EncodeError(out, err.Error())
		}
		ans, err := fn(&msg)
		if err != nil {
			return abi.EncodeError(out, err.Error())
		}
		return abi.EncodePostOutput(out, &ans)
	})
}
