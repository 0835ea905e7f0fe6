package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"
	"unsafe"
)

// Float16ToFloat32 converts an IEEE 754 half-precision value (as its bit
// pattern) to float32 exactly, subnormals, infinities and NaN included.
func Float16ToFloat32(h uint16) float32 {
	bits := uint32(h&0x7fff) << 13 // exponent and mantissa in float32 position
	var f float32
	if h&0x7c00 == 0x7c00 {
		f = math.Float32frombits(bits | 0x7f800000) // inf or NaN; keep the payload
	} else {
		// Rebias the exponent by scaling: exact for normals and subnormals.
		f = math.Float32frombits(bits) * 0x1p112
	}
	return math.Float32frombits(math.Float32bits(f) | uint32(h&0x8000)<<16)
}

// Float32ToFloat16 converts a float32 to the nearest half-precision value
// (round to nearest, ties to even), overflowing to infinity and keeping NaN.
func Float32ToFloat16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			m := uint16(mant >> 13)
			if m == 0 {
				m = 0x200 // keep it a NaN
			}
			return sign | 0x7c00 | m
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Result is subnormal (or zero): value = (1.mant) × 2^(exp-127).
		if e < -10 {
			return sign // rounds to zero (anything below half the smallest subnormal)
		}
		m := mant | 0x800000 // implicit leading one
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		r := m >> shift
		rem := m & (1<<shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, up to infinity: correct
	}
	return sign | uint16(r)
}

// BFloat16ToFloat32 converts a bfloat16 bit pattern to float32 (exact).
func BFloat16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// Float32ToBFloat16 converts a float32 to the nearest bfloat16 (round to
// nearest, ties to even), keeping NaN a NaN.
func Float32ToBFloat16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7f800000 == 0x7f800000 && b&0x7fffff != 0 {
		return uint16(b>>16) | 0x40 // quiet NaN
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// littleEndian reports whether the host stores integers little-endian, in
// which case file bytes can be viewed as Go numbers without conversion.
func littleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// Float32 returns the named tensor as float32 values and its shape. For an
// F32 tensor whose bytes are 4-byte aligned the slice is a zero-copy,
// read-only view of the source (do not modify it); F16, BF16 and F64
// tensors are converted into a new slice.
func Float32(src Source, name string) ([]float32, []int, error) {
	info, ok := src.Info(name)
	if !ok {
		return nil, nil, fmt.Errorf("safetensors: no tensor %q", name)
	}
	b, err := src.Bytes(name)
	if err != nil {
		return nil, nil, err
	}
	n := info.Numel()
	if len(b) != n*DTypeSize(info.DType) {
		return nil, nil, fmt.Errorf("safetensors: tensor %q: %d bytes for %d elements of %s", name, len(b), n, info.DType)
	}
	out, err := bytesToFloat32(b, info.DType, n)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: tensor %q: %w", name, err)
	}
	return out, info.Shape, nil
}

func bytesToFloat32(b []byte, dtype string, n int) ([]float32, error) {
	if n == 0 {
		return []float32{}, nil
	}
	switch dtype {
	case "F32":
		if littleEndian() && uintptr(unsafe.Pointer(&b[0]))%4 == 0 {
			return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), n), nil
		}
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return out, nil
	case "F16":
		out := make([]float32, n)
		parallel(n, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				out[i] = Float16ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
			}
		})
		return out, nil
	case "BF16":
		out := make([]float32, n)
		parallel(n, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				out[i] = BFloat16ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
			}
		})
		return out, nil
	case "F64":
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])))
		}
		return out, nil
	}
	return nil, fmt.Errorf("dtype %s is not a floating-point type", dtype)
}

// Int64 returns the named integer tensor (I64 or I32) as int64 values and
// its shape. Aligned I64 data is a zero-copy, read-only view.
func Int64(src Source, name string) ([]int64, []int, error) {
	info, ok := src.Info(name)
	if !ok {
		return nil, nil, fmt.Errorf("safetensors: no tensor %q", name)
	}
	b, err := src.Bytes(name)
	if err != nil {
		return nil, nil, err
	}
	n := info.Numel()
	if len(b) != n*DTypeSize(info.DType) {
		return nil, nil, fmt.Errorf("safetensors: tensor %q: %d bytes for %d elements of %s", name, len(b), n, info.DType)
	}
	if n == 0 {
		return []int64{}, info.Shape, nil
	}
	switch info.DType {
	case "I64":
		if littleEndian() && uintptr(unsafe.Pointer(&b[0]))%8 == 0 {
			return unsafe.Slice((*int64)(unsafe.Pointer(&b[0])), n), info.Shape, nil
		}
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		}
		return out, info.Shape, nil
	case "I32":
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(b[4*i:])))
		}
		return out, info.Shape, nil
	}
	return nil, nil, fmt.Errorf("safetensors: tensor %q: dtype %s is not I64 or I32", name, info.DType)
}

// parallel runs fn over [0, n) split across the available cores when n is
// large enough to pay for the goroutines.
func parallel(n int, fn func(lo, hi int)) {
	const grain = 1 << 18
	workers := min(runtime.GOMAXPROCS(0), (n+grain-1)/grain)
	if workers <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}
