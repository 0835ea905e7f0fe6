package cpu

import "math"

// expf returns e^x in float32, accurate to about 1 ulp and several times
// faster than math.Exp. Inputs below -87.3 give 0, above 88.72 +Inf.
//
// Method: x = n·ln2 + r with |r| ≤ ln2/2, so e^x = 2^n·e^r; e^r is its
// Taylor series to degree 7 (the truncation error r⁸/8! < 2e-9 is far
// below float32 precision), and 2^n is built from the exponent bits.
func expf(x float32) float32 {
	const (
		log2e = 1.4426950408889634
		ln2hi = 0.693359375            // ln 2 rounded to 9 bits: n·ln2hi is exact
		ln2lo = -2.1219444005469058e-4 // ln 2 − ln2hi
	)
	switch {
	case x > 88.72283:
		return float32(math.Inf(1))
	case x < -87.33654:
		return 0
	case x != x:
		return x
	}
	t := x * log2e
	var n int32
	if t >= 0 {
		n = int32(t + 0.5)
	} else {
		n = int32(t - 0.5)
	}
	fn := float32(n)
	r := x - fn*ln2hi - fn*ln2lo
	p := float32(1.0 / 5040)
	p = p*r + 1.0/720
	p = p*r + 1.0/120
	p = p*r + 1.0/24
	p = p*r + 1.0/6
	p = p*r + 0.5
	p = p*r*r + r + 1
	// n ∈ [-126, 128]; split 2^n where it would leave the normal range.
	if n < -125 {
		return p * math.Float32frombits(uint32(n+127+32)<<23) * (1.0 / (1 << 32))
	}
	if n > 127 {
		return p * 2 * math.Float32frombits(uint32(n-1+127)<<23)
	}
	return p * math.Float32frombits(uint32(n+127)<<23)
}

// erff returns the error function of x to within 3e-7 absolute. For
// |x| < 0.5 it sums the Maclaurin series to x¹³; beyond, it uses the
// rational approximation 7.1.26 of Abramowitz and Stegun's Handbook of
// Mathematical Functions: erf(x) ≈ 1 − (a₁t + … + a₅t⁵)·e^(−x²) with
// t = 1/(1 + p·x) for x ≥ 0, and erf(−x) = −erf(x).
func erff(x float32) float32 {
	const (
		p  = 0.3275911
		a1 = 0.254829592
		a2 = -0.284496736
		a3 = 1.421413741
		a4 = -1.453152027
		a5 = 1.061405429
		// 2/√π and the series coefficients (−1)ⁿ/(n!·(2n+1)).
		twoOverSqrtPi = 1.1283791670955126
		s1            = -1.0 / 3
		s2            = 1.0 / 10
		s3            = -1.0 / 42
		s4            = 1.0 / 216
		s5            = -1.0 / 1320
		s6            = 1.0 / 9360
	)
	ax := x
	if ax < 0 {
		ax = -ax
	}
	if ax < 0.5 {
		z := x * x
		return twoOverSqrtPi * x * (1 + z*(s1+z*(s2+z*(s3+z*(s4+z*(s5+z*s6))))))
	}
	// The polynomial and the final difference in float64: in float32 their
	// rounding would add to the approximation's own 1.5e-7.
	t := 1 / (1 + p*float64(ax))
	y := float32(1 - ((((a5*t+a4)*t+a3)*t+a2)*t+a1)*t*float64(expf(-ax*ax)))
	if x < 0 {
		return -y
	}
	return y
}
