package cpu

// Pure-Go register-tiled micro-kernels. Each keeps its mr×nr accumulators
// in local variables so the compiler can hold them in registers; which one
// is fastest depends on the register file (see BenchmarkMicroKernels).

// kernel4x4Go is the portable 4×4 micro-kernel.
func kernel4x4Go(k int, a, b, c []float32, ldc int) {
	var (
		c00, c01, c02, c03 float32
		c10, c11, c12, c13 float32
		c20, c21, c22, c23 float32
		c30, c31, c32, c33 float32
	)
	a, b = a[:k*4], b[:k*4]
	for len(a) >= 4 && len(b) >= 4 {
		ap, bp := a[:4:4], b[:4:4]
		b0 := bp[0]
		b1 := bp[1]
		b2 := bp[2]
		b3 := bp[3]
		a0 := ap[0]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		a1 := ap[1]
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		a2 := ap[2]
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		a3 := ap[3]
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
		a, b = a[4:], b[4:]
	}
	r0 := c[:4]
	r0[0] += c00
	r0[1] += c01
	r0[2] += c02
	r0[3] += c03
	r1 := c[1*ldc : 1*ldc+4]
	r1[0] += c10
	r1[1] += c11
	r1[2] += c12
	r1[3] += c13
	r2 := c[2*ldc : 2*ldc+4]
	r2[0] += c20
	r2[1] += c21
	r2[2] += c22
	r2[3] += c23
	r3 := c[3*ldc : 3*ldc+4]
	r3[0] += c30
	r3[1] += c31
	r3[2] += c32
	r3[3] += c33
}

// kernel2x8Go is the portable 2×8 micro-kernel.
func kernel2x8Go(k int, a, b, c []float32, ldc int) {
	var (
		c00, c01, c02, c03, c04, c05, c06, c07 float32
		c10, c11, c12, c13, c14, c15, c16, c17 float32
	)
	a, b = a[:k*2], b[:k*8]
	for len(a) >= 2 && len(b) >= 8 {
		ap, bp := a[:2:2], b[:8:8]
		b0 := bp[0]
		b1 := bp[1]
		b2 := bp[2]
		b3 := bp[3]
		b4 := bp[4]
		b5 := bp[5]
		b6 := bp[6]
		b7 := bp[7]
		a0 := ap[0]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c04 += a0 * b4
		c05 += a0 * b5
		c06 += a0 * b6
		c07 += a0 * b7
		a1 := ap[1]
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		c14 += a1 * b4
		c15 += a1 * b5
		c16 += a1 * b6
		c17 += a1 * b7
		a, b = a[2:], b[8:]
	}
	r0 := c[:8]
	r0[0] += c00
	r0[1] += c01
	r0[2] += c02
	r0[3] += c03
	r0[4] += c04
	r0[5] += c05
	r0[6] += c06
	r0[7] += c07
	r1 := c[1*ldc : 1*ldc+8]
	r1[0] += c10
	r1[1] += c11
	r1[2] += c12
	r1[3] += c13
	r1[4] += c14
	r1[5] += c15
	r1[6] += c16
	r1[7] += c17
}

// kernel4x8Go is the portable 4×8 micro-kernel.
func kernel4x8Go(k int, a, b, c []float32, ldc int) {
	var (
		c00, c01, c02, c03, c04, c05, c06, c07 float32
		c10, c11, c12, c13, c14, c15, c16, c17 float32
		c20, c21, c22, c23, c24, c25, c26, c27 float32
		c30, c31, c32, c33, c34, c35, c36, c37 float32
	)
	a, b = a[:k*4], b[:k*8]
	for len(a) >= 4 && len(b) >= 8 {
		ap, bp := a[:4:4], b[:8:8]
		b0 := bp[0]
		b1 := bp[1]
		b2 := bp[2]
		b3 := bp[3]
		b4 := bp[4]
		b5 := bp[5]
		b6 := bp[6]
		b7 := bp[7]
		a0 := ap[0]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c04 += a0 * b4
		c05 += a0 * b5
		c06 += a0 * b6
		c07 += a0 * b7
		a1 := ap[1]
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		c14 += a1 * b4
		c15 += a1 * b5
		c16 += a1 * b6
		c17 += a1 * b7
		a2 := ap[2]
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		c24 += a2 * b4
		c25 += a2 * b5
		c26 += a2 * b6
		c27 += a2 * b7
		a3 := ap[3]
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
		c34 += a3 * b4
		c35 += a3 * b5
		c36 += a3 * b6
		c37 += a3 * b7
		a, b = a[4:], b[8:]
	}
	r0 := c[:8]
	r0[0] += c00
	r0[1] += c01
	r0[2] += c02
	r0[3] += c03
	r0[4] += c04
	r0[5] += c05
	r0[6] += c06
	r0[7] += c07
	r1 := c[1*ldc : 1*ldc+8]
	r1[0] += c10
	r1[1] += c11
	r1[2] += c12
	r1[3] += c13
	r1[4] += c14
	r1[5] += c15
	r1[6] += c16
	r1[7] += c17
	r2 := c[2*ldc : 2*ldc+8]
	r2[0] += c20
	r2[1] += c21
	r2[2] += c22
	r2[3] += c23
	r2[4] += c24
	r2[5] += c25
	r2[6] += c26
	r2[7] += c27
	r3 := c[3*ldc : 3*ldc+8]
	r3[0] += c30
	r3[1] += c31
	r3[2] += c32
	r3[3] += c33
	r3[4] += c34
	r3[5] += c35
	r3[6] += c36
	r3[7] += c37
}

// kernel3x4Go is the portable 3×4 micro-kernel.
func kernel3x4Go(k int, a, b, c []float32, ldc int) {
	var (
		c00, c01, c02, c03 float32
		c10, c11, c12, c13 float32
		c20, c21, c22, c23 float32
	)
	a, b = a[:k*3], b[:k*4]
	for len(a) >= 3 && len(b) >= 4 {
		ap, bp := a[:3:3], b[:4:4]
		b0 := bp[0]
		b1 := bp[1]
		b2 := bp[2]
		b3 := bp[3]
		a0 := ap[0]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		a1 := ap[1]
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		a2 := ap[2]
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		a, b = a[3:], b[4:]
	}
	r0 := c[:4]
	r0[0] += c00
	r0[1] += c01
	r0[2] += c02
	r0[3] += c03
	r1 := c[1*ldc : 1*ldc+4]
	r1[0] += c10
	r1[1] += c11
	r1[2] += c12
	r1[3] += c13
	r2 := c[2*ldc : 2*ldc+4]
	r2[0] += c20
	r2[1] += c21
	r2[2] += c22
	r2[3] += c23
}

// kernel2x4Go is the portable 2×4 micro-kernel.
func kernel2x4Go(k int, a, b, c []float32, ldc int) {
	var (
		c00, c01, c02, c03 float32
		c10, c11, c12, c13 float32
	)
	a, b = a[:k*2], b[:k*4]
	for len(a) >= 2 && len(b) >= 4 {
		ap, bp := a[:2:2], b[:4:4]
		b0 := bp[0]
		b1 := bp[1]
		b2 := bp[2]
		b3 := bp[3]
		a0 := ap[0]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		a1 := ap[1]
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		a, b = a[2:], b[4:]
	}
	r0 := c[:4]
	r0[0] += c00
	r0[1] += c01
	r0[2] += c02
	r0[3] += c03
	r1 := c[1*ldc : 1*ldc+4]
	r1[0] += c10
	r1[1] += c11
	r1[2] += c12
	r1[3] += c13
}

// kernel2x6Go is the portable 2×6 micro-kernel.
func kernel2x6Go(k int, a, b, c []float32, ldc int) {
	var (
		c00, c01, c02, c03, c04, c05 float32
		c10, c11, c12, c13, c14, c15 float32
	)
	a, b = a[:k*2], b[:k*6]
	for len(a) >= 2 && len(b) >= 6 {
		ap, bp := a[:2:2], b[:6:6]
		b0 := bp[0]
		b1 := bp[1]
		b2 := bp[2]
		b3 := bp[3]
		b4 := bp[4]
		b5 := bp[5]
		a0 := ap[0]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c04 += a0 * b4
		c05 += a0 * b5
		a1 := ap[1]
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		c14 += a1 * b4
		c15 += a1 * b5
		a, b = a[2:], b[6:]
	}
	r0 := c[:6]
	r0[0] += c00
	r0[1] += c01
	r0[2] += c02
	r0[3] += c03
	r0[4] += c04
	r0[5] += c05
	r1 := c[1*ldc : 1*ldc+6]
	r1[0] += c10
	r1[1] += c11
	r1[2] += c12
	r1[3] += c13
	r1[4] += c14
	r1[5] += c15
}

// kernel3x3Go is the portable 3×3 micro-kernel.
func kernel3x3Go(k int, a, b, c []float32, ldc int) {
	var (
		c00, c01, c02 float32
		c10, c11, c12 float32
		c20, c21, c22 float32
	)
	a, b = a[:k*3], b[:k*3]
	for len(a) >= 3 && len(b) >= 3 {
		ap, bp := a[:3:3], b[:3:3]
		b0 := bp[0]
		b1 := bp[1]
		b2 := bp[2]
		a0 := ap[0]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		a1 := ap[1]
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		a2 := ap[2]
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		a, b = a[3:], b[3:]
	}
	r0 := c[:3]
	r0[0] += c00
	r0[1] += c01
	r0[2] += c02
	r1 := c[1*ldc : 1*ldc+3]
	r1[0] += c10
	r1[1] += c11
	r1[2] += c12
	r2 := c[2*ldc : 2*ldc+3]
	r2[0] += c20
	r2[1] += c21
	r2[2] += c22
}
