package safetensors

import (
	"math"
	"math/rand/v2"
	"testing"
)

// halfValue computes a half-precision bit pattern's value from the IEEE 754
// definition, independently of Float16ToFloat32.
func halfValue(h uint16) float64 {
	s := 1.0
	if h&0x8000 != 0 {
		s = -1
	}
	e := int(h>>10) & 0x1f
	m := float64(h & 0x3ff)
	switch e {
	case 0x1f:
		if m != 0 {
			return math.NaN()
		}
		return math.Inf(int(s))
	case 0:
		return s * m * math.Pow(2, -24)
	}
	return s * (1 + m/1024) * math.Pow(2, float64(e-15))
}

func TestFloat16ToFloat32Exhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		got := float64(Float16ToFloat32(h))
		want := halfValue(h)
		if math.IsNaN(want) {
			if !math.IsNaN(got) {
				t.Fatalf("%#04x: got %v, want NaN", h, got)
			}
			if back := Float32ToFloat16(float32(got)); back&0x7c00 != 0x7c00 || back&0x3ff == 0 {
				t.Fatalf("%#04x: NaN round trip gave %#04x", h, back)
			}
			continue
		}
		if got != want || math.Signbit(got) != math.Signbit(want) {
			t.Fatalf("%#04x: got %v, want %v", h, got, want)
		}
		if back := Float32ToFloat16(float32(got)); back != h {
			t.Fatalf("%#04x: round trip gave %#04x", h, back)
		}
	}
}

// nearestHalf checks that h is the correctly rounded half of f (ties to even).
func checkNearestHalf(t *testing.T, f float32, h uint16) {
	t.Helper()
	x := float64(f)
	if math.IsNaN(x) {
		if h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
			t.Fatalf("%v → %#04x, want NaN", f, h)
		}
		return
	}
	if math.Abs(x) >= 65520 { // beyond max half + half an ulp: infinity
		if h&0x7fff != 0x7c00 || (h&0x8000 != 0) != math.Signbit(x) {
			t.Fatalf("%v → %#04x, want infinity", f, h)
		}
		return
	}
	got := halfValue(h)
	if math.Signbit(got) != math.Signbit(x) && got != 0 {
		t.Fatalf("%v → %#04x: wrong sign", f, h)
	}
	d := math.Abs(got - x)
	for _, nb := range []uint16{h + 1, h - 1} {
		if nb&0x7c00 == 0x7c00 || (nb^h)&0x8000 != 0 {
			continue
		}
		dn := math.Abs(halfValue(nb) - x)
		if dn < d || (dn == d && h&1 == 1) {
			t.Fatalf("%v → %#04x (%v), but %#04x (%v) is nearer or the even tie", f, h, got, nb, halfValue(nb))
		}
	}
}

func TestFloat32ToFloat16Rounding(t *testing.T) {
	edge := []float32{0, 65504, 65519.99, 65520, -65520, 1e10, float32(math.Inf(-1)),
		float32(math.Pow(2, -24)), float32(math.Pow(2, -25)), float32(3 * math.Pow(2, -26)),
		float32(math.Pow(2, -25)) * 1.0001, float32(math.Pow(2, -14)), float32(math.Pow(2, -14)) * 0.99,
		1.0009765625, 1 + 1.0/2048, 1 + 3.0/2048, -0.1, 0.3333333, 6.1e-5, float32(math.NaN())}
	for _, f := range edge {
		checkNearestHalf(t, f, Float32ToFloat16(f))
	}
	if Float32ToFloat16(float32(math.Copysign(0, -1))) != 0x8000 {
		t.Fatal("-0 lost its sign")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		// Cover the half range densely: random exponents between 2^-30 and 2^17.
		f := float32(math.Ldexp(r.Float64()+0.5, r.IntN(48)-30))
		if r.IntN(2) == 0 {
			f = -f
		}
		checkNearestHalf(t, f, Float32ToFloat16(f))
	}
}

func TestBFloat16(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := BFloat16ToFloat32(h)
		if math.Float32bits(f) != uint32(h)<<16 {
			t.Fatalf("%#04x → %v", h, f)
		}
		back := Float32ToBFloat16(f)
		if math.IsNaN(float64(f)) {
			if !math.IsNaN(float64(BFloat16ToFloat32(back))) {
				t.Fatalf("NaN %#04x round trip gave %#04x", h, back)
			}
		} else if back != h {
			t.Fatalf("%#04x round trip gave %#04x", h, back)
		}
	}
	// Ties to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7.
	if got := BFloat16ToFloat32(Float32ToBFloat16(1 + 1.0/256)); got != 1 {
		t.Fatalf("1+2^-8 → %v, want 1", got)
	}
	if got := BFloat16ToFloat32(Float32ToBFloat16(1 + 3.0/256)); got != 1+4.0/256 {
		t.Fatalf("1+3·2^-8 → %v, want 1+2^-6", got)
	}
	if got := BFloat16ToFloat32(Float32ToBFloat16(math.MaxFloat32)); !math.IsInf(float64(got), 1) {
		t.Fatalf("MaxFloat32 → %v, want +Inf", got)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 100000; i++ {
		f := math.Float32frombits(r.Uint32())
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			continue
		}
		b := Float32ToBFloat16(f)
		got := float64(BFloat16ToFloat32(b))
		if math.IsInf(got, 0) {
			continue // rounding past MaxFloat32's bfloat16 neighbour
		}
		d := math.Abs(got - float64(f))
		for _, nb := range []uint16{b + 1, b - 1} {
			v := float64(BFloat16ToFloat32(nb))
			if math.IsNaN(v) || math.IsInf(v, 0) || (nb^b)&0x8000 != 0 {
				continue
			}
			if dn := math.Abs(v - float64(f)); dn < d || (dn == d && b&1 == 1) {
				t.Fatalf("%v → %v, but %v is nearer or the even tie", f, got, v)
			}
		}
	}
}

// TestFloat32Unaligned reads F32 data that is not 4-byte aligned in memory
// (converted rather than viewed) and aligned data (viewed without copying).
func TestFloat32Unaligned(t *testing.T) {
	m, err := NewMemory([]WriteTensor{F32Tensor("a", []int{3}, []float32{1, 2, 3})})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := m.Bytes("a")
	buf := make([]byte, len(b)+1)
	copy(buf[1:], b)
	un, err := NewMemory([]WriteTensor{{Name: "a", DType: "F32", Shape: []int{3}, Data: buf[1:]}})
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []Source{m, un} {
		v, _, err := Float32(src, "a")
		if err != nil || v[0] != 1 || v[1] != 2 || v[2] != 3 {
			t.Fatalf("%v %v", v, err)
		}
	}
	if v, _, _ := Float32(m, "a"); &v[0] != (*float32)(ptr(b)) {
		t.Fatal("aligned F32 was copied, want a zero-copy view")
	}
}
