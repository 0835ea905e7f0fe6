// Package half encodes and decodes the little-endian float buffers the GPU
// computes in (IEEE binary16, bfloat16 and float32). Single values convert
// through core/safetensors (round to nearest even); binary16 decoding goes
// through a table built from it, several times faster than converting each
// value (BenchmarkDecodeF16).
package half

import (
	"encoding/binary"
	"math"
	"sync"

	"github.com/kiln-project/kiln/core/safetensors"
)

// f16Table maps every binary16 bit pattern to its float32 value.
var f16Table = sync.OnceValue(func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for h := range t {
		t[h] = safetensors.Float16ToFloat32(uint16(h))
	}
	return &t
})

// EncodeF16 writes src as little-endian binary16 into dst (2·len(src) bytes).
func EncodeF16(dst []byte, src []float32) {
	for i, f := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], safetensors.Float32ToFloat16(f))
	}
}

// EncodeBF16 writes src as little-endian bfloat16 into dst.
func EncodeBF16(dst []byte, src []float32) {
	for i, f := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], safetensors.Float32ToBFloat16(f))
	}
}

// EncodeF32 writes src as little-endian float32 into dst.
func EncodeF32(dst []byte, src []float32) {
	for i, f := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(f))
	}
}

// DecodeF16 reads little-endian binary16 values into dst (by table).
func DecodeF16(dst []float32, src []byte) {
	t := f16Table()
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = t[uint16(src[2*i])|uint16(src[2*i+1])<<8]
	}
}

// DecodeBF16 reads little-endian bfloat16 values into dst.
func DecodeBF16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = safetensors.BFloat16ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

// DecodeF32 reads little-endian float32 values into dst.
func DecodeF32(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}
