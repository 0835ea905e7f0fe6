package half

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
)

// allPatterns returns every 16-bit pattern, little-endian.
func allPatterns() []byte {
	raw := make([]byte, 2<<16)
	for h := 0; h < 1<<16; h++ {
		binary.LittleEndian.PutUint16(raw[2*h:], uint16(h))
	}
	return raw
}

// TestF16RoundTripAll decodes every binary16 pattern (through the table),
// checks it against the single-value conversion and encodes it back.
func TestF16RoundTripAll(t *testing.T) {
	raw := allPatterns()
	f := make([]float32, 1<<16)
	DecodeF16(f, raw)
	back := make([]byte, len(raw))
	EncodeF16(back, f)
	for h := 0; h < 1<<16; h++ {
		want := safetensors.Float16ToFloat32(uint16(h))
		if math.Float32bits(f[h]) != math.Float32bits(want) {
			t.Fatalf("DecodeF16(%#04x) = %v, want %v", h, f[h], want)
		}
		got := binary.LittleEndian.Uint16(back[2*h:])
		if math.IsNaN(float64(f[h])) {
			if got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
				t.Fatalf("NaN %#04x became %#04x", h, got)
			}
			continue
		}
		if got != uint16(h) {
			t.Fatalf("%#04x → %v → %#04x", h, f[h], got)
		}
	}
}

// TestBF16RoundTripAll does the same for bfloat16, plus one rounding tie.
func TestBF16RoundTripAll(t *testing.T) {
	raw := allPatterns()
	f := make([]float32, 1<<16)
	DecodeBF16(f, raw)
	back := make([]byte, len(raw))
	EncodeBF16(back, f)
	for h := 0; h < 1<<16; h++ {
		if math.Float32bits(f[h]) != uint32(h)<<16 {
			t.Fatalf("DecodeBF16(%#04x) = %v", h, f[h])
		}
		got := binary.LittleEndian.Uint16(back[2*h:])
		if math.IsNaN(float64(f[h])) {
			if got&0x7f80 != 0x7f80 || got&0x7f == 0 {
				t.Fatalf("NaN %#04x became %#04x", h, got)
			}
			continue
		}
		if got != uint16(h) {
			t.Fatalf("%#04x → %v → %#04x", h, f[h], got)
		}
	}
	// 1 + 2^-8 lies halfway between 1 and 1+2^-7: ties go to even.
	EncodeBF16(back[:2], []float32{1 + 1.0/256})
	if got := binary.LittleEndian.Uint16(back); got != 0x3f80 {
		t.Errorf("tie rounded to %#04x", got)
	}
}

// TestF32RoundTrip checks the float32 buffers bit for bit.
func TestF32RoundTrip(t *testing.T) {
	src := []float32{0, float32(math.Copysign(0, -1)), 1, -3.25, math.MaxFloat32,
		math.SmallestNonzeroFloat32, float32(math.Inf(-1)), math.Float32frombits(0x7fc01234)}
	raw := make([]byte, 4*len(src))
	EncodeF32(raw, src)
	got := make([]float32, len(src))
	DecodeF32(got, raw)
	for i := range src {
		if math.Float32bits(got[i]) != math.Float32bits(src[i]) {
			t.Errorf("%d: %#08x became %#08x", i, math.Float32bits(src[i]), math.Float32bits(got[i]))
		}
	}
}

func benchmarkF16Input() ([]float32, []byte) {
	src := make([]byte, 2<<20)
	for i := range src {
		src[i] = byte(i * 7)
	}
	return make([]float32, 1<<20), src
}

// BenchmarkDecodeF16 measures the table-driven decode.
func BenchmarkDecodeF16(b *testing.B) {
	dst, src := benchmarkF16Input()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		DecodeF16(dst, src)
	}
}

// BenchmarkDecodeF16PerValue is what DecodeF16 would cost without its table.
func BenchmarkDecodeF16PerValue(b *testing.B) {
	dst, src := benchmarkF16Input()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		for i := range dst {
			dst[i] = safetensors.Float16ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	}
}
