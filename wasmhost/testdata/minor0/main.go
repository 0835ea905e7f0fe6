//go:build wasip1

// Command minor0 is a quality policy as modules built before ABI minor 2
// were: no kiln_abi_minor export, and it fails on any input that carries
// fields of a later minor. It halves the steps and doubles the width
// (then clamps nothing), so tests can see the host restore locked fields.
package main

import (
	"unsafe"

	"github.com/kiln-project/kiln/wasmhost/abi"
)

var inBuf, outBuf []byte

//go:wasmexport kiln_abi_version
func abiVersion() int32 { return abi.Version }

//go:wasmexport kiln_alloc
func alloc(n int32) int32 {
	if n <= 0 {
		return 0
	}
	if cap(inBuf) < int(n) {
		inBuf = make([]byte, n)
	}
	inBuf = inBuf[:n]
	return int32(uintptr(unsafe.Pointer(&inBuf[0])))
}

//go:wasmexport kiln_quality
func quality(ptr, n int32) int64 {
	in, minor, err := abi.DecodeQualityInputMinor(inBuf[:n])
	switch {
	case err != nil:
		outBuf = abi.EncodeError(outBuf, err.Error())
	case minor != 0:
		outBuf = abi.EncodeError(outBuf, "a minor-0 module got minor-2 fields")
	default:
		out := abi.QualityOutput{Params: in.Request, Level: 0.5}
		out.Params.Steps = max(in.Request.Steps/2, in.Limits.MinSteps)
		out.Params.Width = min(in.Request.Width*2, in.Limits.MaxWidth/8*8)
		outBuf = abi.EncodeQualityOutputAt(outBuf, &out, 0)
	}
	if len(outBuf) == 0 {
		return 0
	}
	return int64(uint64(uintptr(unsafe.Pointer(&outBuf[0])))<<32 | uint64(len(outBuf)))
}

func main() {}
