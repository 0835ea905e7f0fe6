package half

import (
	"math"
	"testing"
)

func TestE4M3Values(t *testing.T) {
	for _, c := range []struct {
		b byte
		f float32
	}{
		{0x00, 0}, {0x01, 1.0 / 512}, {0x07, 7.0 / 512}, {0x08, 1.0 / 64}, {0x38, 1}, {0x39, 1.125},
		{0x40, 2}, {0x7e, 448}, {0xb8, -1}, {0xfe, -448}, {0x80, 0},
	} {
		if got := FromE4M3(c.b); got != c.f {
			t.Errorf("FromE4M3(%#x) = %v, want %v", c.b, got, c.f)
		}
		if c.b != 0x80 {
			if got := ToE4M3(c.f); got != c.b {
				t.Errorf("ToE4M3(%v) = %#x, want %#x", c.f, got, c.b)
			}
		}
	}
	if !math.IsNaN(float64(FromE4M3(0x7f))) || !math.IsNaN(float64(FromE4M3(0xff))) {
		t.Error("0x7f/0xff must decode to NaN")
	}
	for _, c := range []struct {
		f float32
		b byte
	}{
		{1.0625, 0x38},  // tie between 1 (0x38) and 1.125 (0x39): even code
		{1.1875, 0x3a},  // tie between 1.125 and 1.25: even code 0x3a
		{1.07, 0x39},    // nearer 1.125
		{1000, 0x7e},    // saturates
		{-1e9, 0xfe},    // saturates
		{1.0 / 2048, 0}, // below half the smallest subnormal
		{float32(math.NaN()), 0x7f},
		{float32(math.Inf(1)), 0x7e},
	} {
		if got := ToE4M3(c.f); got != c.b {
			t.Errorf("ToE4M3(%v) = %#x, want %#x", c.f, got, c.b)
		}
	}
	// Every finite code survives a round trip.
	for b := 0; b < 256; b++ {
		if b&0x7f == 0x7f || b == 0x80 {
			continue
		}
		if got := ToE4M3(FromE4M3(byte(b))); got != byte(b) {
			t.Errorf("round trip %#x → %#x", b, got)
		}
	}
}
