package resample

import (
	"math"
	"testing"
)

// TestLanczosIdentityAndConstant checks that resizing to the same size is
// the identity (the kernel is 0 at every non-zero integer) and that a
// constant image stays constant at any scale (weights sum to 1).
func TestLanczosIdentityAndConstant(t *testing.T) {
	src := make([]float32, 2*7*9)
	for i := range src {
		src[i] = float32(math.Sin(float64(i) * 0.7))
	}
	same, err := Lanczos(src, 2, 7, 9, 7, 9)
	if err != nil {
		t.Fatal(err)
	}
	for i := range src {
		if math.Abs(float64(same[i]-src[i])) > 1e-6 {
			t.Fatalf("identity resize changed value %d: %v → %v", i, src[i], same[i])
		}
	}
	flat := make([]float32, 5*6)
	for i := range flat {
		flat[i] = 0.375
	}
	for _, sz := range [][2]int{{11, 13}, {2, 3}, {5, 6}, {17, 4}} {
		out, err := Lanczos(flat, 1, 5, 6, sz[0], sz[1])
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range out {
			if math.Abs(float64(v)-0.375) > 1e-6 {
				t.Fatalf("constant image resized to %v gave %v", sz, v)
			}
		}
	}
}

// TestLanczosImpulse checks one weight of each direction against the
// Lanczos-3 window computed by hand (sinc(x)·sinc(x/3), normalised over
// PIL's window): enlarging 11 → 22 pixels, output 10 takes 0.89277 of
// source pixel 5; shrinking 12 → 6, the kernel widens to 6 pixels and
// output 3 takes 0.44804 of source pixel 6 (antialiasing).
func TestLanczosImpulse(t *testing.T) {
	up := make([]float32, 11)
	up[5] = 1
	out, err := Lanczos(up, 1, 1, 11, 1, 22)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(out[10])-0.8927707740853275) > 1e-6 {
		t.Fatalf("2× enlargement weight %v, want 0.89277", out[10])
	}
	if !(out[8] < 0 || out[12] < 0) {
		t.Fatalf("no negative lobe around the impulse: %v", out)
	}
	down := make([]float32, 12)
	down[6] = 1
	out, err = Lanczos(down, 1, 1, 12, 1, 6)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(out[3])-0.44803826086486276) > 1e-6 {
		t.Fatalf("2× reduction weight %v, want 0.44804", out[3])
	}
	// vertical and horizontal passes agree: a column impulse resized
	// vertically equals the row case
	col, err := Lanczos(up, 1, 11, 1, 22, 1)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(col[10]-0.8927707740853275)) > 1e-6 {
		t.Fatalf("vertical weight %v", col[10])
	}
}

// TestLanczosRamp checks that enlarging a linear ramp reproduces it away
// from the borders (a Lanczos-3 window is nearly linear-exact), and that
// shrinking a one-pixel checkerboard averages it to about 0.5 instead of
// aliasing it.
func TestLanczosRamp(t *testing.T) {
	ramp := make([]float32, 16)
	for i := range ramp {
		ramp[i] = float32(i) / 15
	}
	out, err := Lanczos(ramp, 1, 1, 16, 1, 32)
	if err != nil {
		t.Fatal(err)
	}
	for x := 8; x < 24; x++ {
		want := ((float64(x)+0.5)/2 - 0.5) / 15
		if math.Abs(float64(out[x])-want) > 2e-3 {
			t.Fatalf("ramp at %d: %v, want %v", x, out[x], want)
		}
	}
	check := make([]float32, 32)
	for i := range check {
		check[i] = float32(i % 2)
	}
	out, err = Lanczos(check, 1, 1, 32, 1, 16)
	if err != nil {
		t.Fatal(err)
	}
	for x := 3; x < 13; x++ {
		if math.Abs(float64(out[x])-0.5) > 0.05 {
			t.Fatalf("shrunk checkerboard at %d: %v, want about 0.5", x, out[x])
		}
	}
}

// TestBilinear checks torch's align_corners=false sampling by hand: 2×
// enlargement of [0, 1, 3] is [0, .25, .75, 1.5, 2.5, 3], and shrinking
// samples between pixel centres without averaging wider.
func TestBilinear(t *testing.T) {
	out, err := Bilinear([]float32{0, 1, 3}, 1, 1, 3, 1, 6)
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{0, 0.25, 0.75, 1.5, 2.5, 3}
	for i := range want {
		if math.Abs(float64(out[i]-want[i])) > 1e-6 {
			t.Fatalf("enlarged %v, want %v", out, want)
		}
	}
	out, err = Bilinear([]float32{0, 1, 2, 3, 10, 20, 30, 40}, 2, 1, 4, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{0.5, 2.5, 15, 35}; out[0] != want[0] || out[1] != want[1] || out[2] != want[2] || out[3] != want[3] {
		t.Fatalf("shrunk %v, want %v", out, want)
	}
	// 2-D: the four corners of a 2×2 image enlarged to 4×4
	out, err = Bilinear([]float32{0, 4, 8, 12}, 1, 2, 2, 4, 4)
	if err != nil {
		t.Fatal(err)
	}
	if out[0] != 0 || out[15] != 12 || math.Abs(float64(out[5])-3) > 1e-6 {
		t.Fatalf("2-D enlargement %v", out)
	}
}

// TestBadSizes checks that bad sizes and short inputs are errors.
func TestBadSizes(t *testing.T) {
	for _, f := range []func([]float32, int, int, int, int, int) ([]float32, error){Lanczos, Bilinear} {
		if _, err := f(make([]float32, 4), 1, 2, 2, 0, 4); err == nil {
			t.Fatal("zero output size accepted")
		}
		if _, err := f(make([]float32, 3), 1, 2, 2, 4, 4); err == nil {
			t.Fatal("short input accepted")
		}
	}
}

// BenchmarkLanczos512To1024 enlarges an RGB 512² image to 1024².
func BenchmarkLanczos512To1024(b *testing.B) {
	src := make([]float32, 3*512*512)
	for i := range src {
		src[i] = float32(i%251) / 251
	}
	b.ResetTimer()
	for range b.N {
		if _, err := Lanczos(src, 3, 512, 512, 1024, 1024); err != nil {
			b.Fatal(err)
		}
	}
}
