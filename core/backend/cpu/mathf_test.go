package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestExpf(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	check := func(x float32) {
		got := float64(expf(x))
		want := math.Exp(float64(x))
		if want < math.SmallestNonzeroFloat32*1e8 {
			if math.Abs(got-want) > 1e-37 {
				t.Fatalf("expf(%v) = %v, want %v", x, got, want)
			}
			return
		}
		if math.IsInf(want, 1) || want > math.MaxFloat32 {
			if !math.IsInf(got, 1) && got < math.MaxFloat32*0.999 {
				t.Fatalf("expf(%v) = %v, want overflow", x, got)
			}
			return
		}
		if e := math.Abs(got-want) / want; e > 3e-7 {
			t.Fatalf("expf(%v) = %v, want %v (rel err %.3g)", x, got, want, e)
		}
	}
	for _, x := range []float32{0, 1, -1, 0.5, -0.5, 88.7, 88.72, -87.3, -87.33, -80, 80, 1e-8, -1e-8, 0.34657359, -0.34657359, 10, -10} {
		check(x)
	}
	for range 200000 {
		check(float32((r.Float64()*2 - 1) * 88))
		check(float32(r.NormFloat64() * 3))
	}
	if expf(89) != float32(math.Inf(1)) || expf(-100) != 0 || !math.IsNaN(float64(expf(float32(math.NaN())))) {
		t.Fatal("expf special cases")
	}
}

func TestErff(t *testing.T) {
	r := rand.New(rand.NewPCG(35, 36))
	var worst float64
	for i := range 400000 {
		x := float32(r.NormFloat64() * 3)
		if i%2 == 0 {
			x = float32(r.Float64()*2 - 1)
		}
		d := math.Abs(float64(erff(x)) - math.Erf(float64(x)))
		worst = max(worst, d)
		if d > 3e-7 {
			t.Fatalf("erff(%v) = %v, want %v", x, erff(x), math.Erf(float64(x)))
		}
	}
	t.Logf("largest error %.3g", worst)
	if erff(0) != 0 || erff(10) != 1 || erff(-10) != -1 {
		t.Fatal("erff special values")
	}
}

func BenchmarkExp(b *testing.B) {
	xs := randn(rand.New(rand.NewPCG(1, 1)), 4096)
	b.Run("expf", func(b *testing.B) {
		var s float32
		for range b.N {
			for _, x := range xs {
				s += expf(x)
			}
		}
		_ = s
	})
	b.Run("math.Exp", func(b *testing.B) {
		var s float32
		for range b.N {
			for _, x := range xs {
				s += float32(math.Exp(float64(x)))
			}
		}
		_ = s
	})
	b.Run("erff", func(b *testing.B) {
		var s float32
		for range b.N {
			for _, x := range xs {
				s += erff(x)
			}
		}
		_ = s
	})
	b.Run("math.Erf", func(b *testing.B) {
		var s float32
		for range b.N {
			for _, x := range xs {
				s += float32(math.Erf(float64(x)))
			}
		}
		_ = s
	})
}

func TestVectorHelpersMatchScalar(t *testing.T) {
	if !hasVec() {
		t.Skip("no vector helpers on this CPU")
	}
	r := rand.New(rand.NewPCG(33, 34))
	for _, n := range []int{1, 7, 8, 9, 16, 63, 64, 1000} {
		x := randn(r, n)
		for i := range x {
			x[i] *= 30
		}
		x[r.IntN(n)] = 95 // beyond the clamp after scaling by 1
		if mv, ms := maxf(x, true), maxf(x, false); mv != ms {
			t.Fatalf("n=%d: max %v (vector) vs %v (scalar)", n, mv, ms)
		}
		// Activations, including arguments far beyond exp's range.
		wide := append([]float32(nil), x...)
		wide[0], wide[n-1] = 120, -120
		for _, alpha := range []float32{1, 1.702} {
			a, b := make([]float32, n), make([]float32, n)
			sigmul(a, wide, alpha, true)
			sigmul(b, wide, alpha, false)
			for i := range a {
				want := float64(wide[i]) / (1 + math.Exp(-float64(alpha)*float64(wide[i])))
				if math.Abs(float64(a[i])-want) > 3e-7*math.Max(1, math.Abs(want)) || math.Abs(float64(b[i])-want) > 3e-7*math.Max(1, math.Abs(want)) {
					t.Fatalf("n=%d: x·σ(%v·%v) = %v (vector), %v (scalar), want %v", n, alpha, wide[i], a[i], b[i], want)
				}
			}
		}
		m := randn(r, n)
		for _, mul := range [][]float32{nil, m} {
			a, b := make([]float32, n), make([]float32, n)
			geluMul(a, wide, mul, true)
			geluMul(b, wide, mul, false)
			for i := range a {
				want := 0.5 * float64(wide[i]) * math.Erfc(-float64(wide[i])/math.Sqrt2)
				if mul != nil {
					want *= float64(mul[i])
				}
				tol := 5e-7 * math.Max(1, math.Abs(float64(wide[i])))
				if math.Abs(float64(a[i])-want) > tol || math.Abs(float64(b[i])-want) > tol {
					t.Fatalf("n=%d: GELU(%v)·m = %v (vector), %v (scalar), want %v", n, wide[i], a[i], b[i], want)
				}
			}
		}
		for _, sc := range []float32{1, 0.125} {
			shift := maxf(x, false) * sc
			a, b := append([]float32(nil), x...), append([]float32(nil), x...)
			sa, sb := expScaleSum(a, sc, shift, true), expScaleSum(b, sc, shift, false)
			if math.Abs(float64(sa-sb)) > 1e-6*math.Abs(float64(sb)) {
				t.Fatalf("n=%d scale %v: sum %v (vector) vs %v (scalar)", n, sc, sa, sb)
			}
			for i := range a {
				want := math.Exp(max(float64(x[i]*sc-shift), -87)) // scale is a power of 2: exact
				if math.Abs(float64(a[i])-want) > 3e-7*want || math.Abs(float64(b[i])-want) > 3e-7*want {
					t.Fatalf("n=%d scale %v: e^(%v) = %v (vector), %v (scalar), want %v", n, sc, x[i], a[i], b[i], want)
				}
			}
		}
	}
}
