package rng

import (
	"math"
	"testing"
)

func TestSlerpEnds(t *testing.T) {
	c, h, w := 4, 8, 6
	low, high := NewCPU(1).Randn(c*h*w), NewCPU(2).Randn(c*h*w)
	for k, v := range Slerp(0, low, high, c, h, w) {
		if v != low[k] {
			t.Fatalf("t=0: value %d is %v, want %v", k, v, low[k])
		}
	}
	for k, v := range Slerp(1, low, high, c, h, w) {
		if math.Abs(float64(v-high[k])) > 1e-6 {
			t.Fatalf("t=1: value %d is %v, want %v", k, v, high[k])
		}
	}
	mid := Slerp(0.5, low, high, c, h, w)
	// halfway along the arc: each column's norm stays between the ends'
	// and the result differs from both
	same := 0
	for k := range mid {
		if mid[k] == low[k] || mid[k] == high[k] {
			same++
		}
	}
	if same > len(mid)/10 {
		t.Fatalf("t=0.5 equals an end in %d of %d values", same, len(mid))
	}
	// spherical, not linear: for a column, the norm of the mix of two
	// unit-ish orthogonal vectors stays near theirs (a linear mix shrinks
	// to about 1/√2 of it)
	var nm, nl float64
	for y := 0; y < h; y++ {
		nm += float64(mid[y*w]) * float64(mid[y*w])
		nl += float64(low[y*w]) * float64(low[y*w])
	}
	lin := 0.0
	for y := 0; y < h; y++ {
		v := 0.5*float64(low[y*w]) + 0.5*float64(high[y*w])
		lin += v * v
	}
	if math.Abs(nm-lin) < 1e-9 {
		t.Fatalf("t=0.5 is the linear mix")
	}
}

func TestSlerpParallelFallback(t *testing.T) {
	low := NewCPU(3).Randn(2 * 4 * 4)
	out := Slerp(0.25, low, low, 2, 4, 4)
	for k := range out {
		// A1111's fallback: low·t + high·(1−t) = low when both are equal
		if math.Abs(float64(out[k]-low[k])) > 1e-6 {
			t.Fatalf("value %d: %v, want %v", k, out[k], low[k])
		}
	}
}

func TestPasteCentered(t *testing.T) {
	// smaller source lands in the middle
	dst := make([]float32, 1*4*6)
	src := []float32{1, 2, 3, 4}
	PasteCentered(dst, 1, 4, 6, src, 2, 2)
	want := []float32{0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0}
	for k := range want {
		if dst[k] != want[k] {
			t.Fatalf("smaller: got %v, want %v", dst, want)
		}
	}
	// larger source: its middle is cut out; odd difference floors as Python
	big := make([]float32, 5*5)
	for k := range big {
		big[k] = float32(k)
	}
	small := make([]float32, 2*2)
	PasteCentered(small, 1, 2, 2, big, 5, 5)
	// dx = (2-5)//2 = -2 → source offset 2, width 5-4 = 1: only one value
	// of the 2×2 target is written, A1111's quirk kept
	if small[0] != 12 || small[1] != 0 || small[2] != 0 || small[3] != 0 {
		t.Fatalf("larger: got %v", small)
	}
}
