package half

import (
	"math"
	"sort"
	"sync"
)

// E4M3 values: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits, no
// infinities, 0x7f and 0xff NaN, largest finite ±448 (OCP FP8, NVIDIA's
// __nv_fp8_e4m3).

// FromE4M3 decodes an E4M3 byte.
func FromE4M3(b byte) float32 {
	e, m := int(b>>3)&15, float64(b&7)
	var v float64
	switch {
	case e == 15 && m == 7:
		return float32(math.NaN())
	case e == 0:
		v = m / 8 * math.Ldexp(1, -6)
	default:
		v = (1 + m/8) * math.Ldexp(1, e-7)
	}
	if b&0x80 != 0 {
		v = -v
	}
	return float32(v)
}

// e4m3Pos lists the non-negative finite E4M3 values by code (0 … 0x7e),
// increasing.
var e4m3Pos = sync.OnceValue(func() []float32 {
	v := make([]float32, 0x7f)
	for i := range v {
		v[i] = FromE4M3(byte(i))
	}
	return v
})

// ToE4M3 encodes f as the GPU's cvt.rn.satfinite does: to the nearest
// E4M3 value, ties to the even code, magnitudes beyond 448 to ±448, NaN to
// 0x7f.
func ToE4M3(f float32) byte {
	if f != f {
		return 0x7f
	}
	var sign byte
	if math.Signbit(float64(f)) {
		sign, f = 0x80, -f
	}
	t := e4m3Pos()
	if f >= t[len(t)-1] {
		return sign | byte(len(t)-1)
	}
	i := sort.Search(len(t), func(i int) bool { return t[i] >= f }) // t[i-1] < f ≤ t[i]
	if t[i] == f || i == 0 {
		return sign | byte(i)
	}
	lo, hi := float64(t[i-1]), float64(t[i])
	switch d := (float64(f) - lo) - (hi - float64(f)); {
	case d < 0:
		i--
	case d == 0 && i%2 == 1:
		i--
	}
	return sign | byte(i)
}
