package half

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestRoundTripAllHalves converts every binary16 value to float32 and back.
func TestRoundTripAllHalves(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := ToF32(uint16(h))
		got := FromF32(f)
		if math.IsNaN(float64(f)) {
			if got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
				t.Fatalf("NaN %#04x became %#04x", h, got)
			}
			continue
		}
		if got != uint16(h) {
			t.Fatalf("%#04x → %v → %#04x", h, f, got)
		}
	}
}

// TestNearestEven checks FromF32 against the nearest of the two
// neighbouring halves on random float32 values across the range.
func TestNearestEven(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		f := float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(40)-25)))
		h := FromF32(f)
		g := float64(ToF32(h))
		if math.IsInf(g, 0) {
			if math.Abs(float64(f)) < 65520 {
				t.Fatalf("%v overflowed", f)
			}
			continue
		}
		// neighbours
		for _, n := range []uint16{h + 1, h - 1} {
			v := float64(ToF32(n))
			if math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			if math.Abs(v-float64(f)) < math.Abs(g-float64(f)) {
				t.Fatalf("%v rounded to %v but %v is nearer", f, g, v)
			}
			if math.Abs(v-float64(f)) == math.Abs(g-float64(f)) && h&1 == 1 && (n&0x8000) == (h&0x8000) {
				t.Fatalf("tie %v went to odd %#04x", f, h)
			}
		}
	}
}

func TestBF16(t *testing.T) {
	cases := []struct {
		f    float32
		want uint16
	}{{1, 0x3f80}, {-2, 0xc000}, {0, 0}, {float32(math.Inf(1)), 0x7f80}}
	for _, c := range cases {
		if got := BF16FromF32(c.f); got != c.want {
			t.Errorf("BF16FromF32(%v) = %#04x, want %#04x", c.f, got, c.want)
		}
	}
	// ties to even: 1 + 2^-8 lies halfway between 1 and 1+2^-7
	if got := BF16FromF32(1 + 1.0/256); got != 0x3f80 {
		t.Errorf("tie rounded to %#04x", got)
	}
	if got := BF16FromF32(float32(math.NaN())); got&0x7f80 != 0x7f80 || got&0x7f == 0 {
		t.Errorf("NaN became %#04x", got)
	}
	for h := 0; h < 1<<16; h++ {
		f := BF16ToF32(uint16(h))
		if math.IsNaN(float64(f)) {
			continue
		}
		if got := BF16FromF32(f); got != uint16(h) {
			t.Fatalf("%#04x → %v → %#04x", h, f, got)
		}
	}
}
