//go:build amd64 && !purego

package cpu

import "golang.org/x/sys/cpu"

//go:noescape
func expScaleAVX2(x *float32, n int, scale, shift float32) float32

//go:noescape
func maxAVX2(x *float32, n int) float32

// hasVec reports whether the AVX2 vector helpers can run.
func hasVec() bool { return cpu.X86.HasAVX2 && cpu.X86.HasFMA }

// expScaleVec handles the leading multiple of 8 elements of x, returning
// how many it did and their sum.
func expScaleVec(x []float32, scale, shift float32) (int, float32) {
	n := len(x) &^ 7
	if n == 0 {
		return 0, 0
	}
	return n, expScaleAVX2(&x[0], n, scale, shift)
}

// maxVec returns the maximum of the leading multiple of 8 elements of x
// and how many that was.
func maxVec(x []float32) (int, float32) {
	n := len(x) &^ 7
	if n == 0 {
		return 0, 0
	}
	return n, maxAVX2(&x[0], n)
}

//go:noescape
func sigmulAVX2(dst, src *float32, n int, alpha float32)

//go:noescape
func geluMulAVX2(dst, x, m *float32, n int)

// sigmulVec handles the leading multiple of 8 elements of src and returns
// how many it did.
func sigmulVec(dst, src []float32, alpha float32) int {
	n := len(src) &^ 7
	if n == 0 {
		return 0
	}
	_ = dst[n-1]
	sigmulAVX2(&dst[0], &src[0], n, alpha)
	return n
}

// geluMulVec handles the leading multiple of 8 elements of x (times m
// unless m is nil) and returns how many it did.
func geluMulVec(dst, x, m []float32) int {
	n := len(x) &^ 7
	if n == 0 {
		return 0
	}
	_ = dst[n-1]
	var mp *float32
	if m != nil {
		_ = m[n-1]
		mp = &m[0]
	}
	geluMulAVX2(&dst[0], &x[0], mp, n)
	return n
}
