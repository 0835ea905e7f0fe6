package cpu

import (
	"encoding/binary"
	"math"
	"unsafe"

	"github.com/kiln-project/kiln/core/safetensors"
)

// littleEndian reports whether the host stores float32 little-endian, so
// that raw safetensors bytes can be aliased as []float32.
func littleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

func float32NaN() float32 { return float32(math.NaN()) }

func decodeF32(dst []float32, raw []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
}

func decodeBF16(dst []float32, raw []byte) {
	for i := range dst {
		dst[i] = safetensors.BFloat16ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
	}
}

func decodeF16(dst []float32, raw []byte) {
	for i := range dst {
		dst[i] = safetensors.Float16ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
	}
}
