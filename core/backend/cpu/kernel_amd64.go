//go:build amd64 && !purego

package cpu

import "golang.org/x/sys/cpu"

// Assembly micro-kernels of this package (kernel_amd64.s), written for it.

//go:noescape
func kernel6x16AVX2(k int, a, b, c *float32, ldc int)

//go:noescape
func kernel12x32AVX512(k int, a, b, c *float32, ldc int)

// kernel6x16 checks bounds and runs the AVX2/FMA 6×16 kernel.
func kernel6x16(k int, a, b, c []float32, ldc int) {
	if k <= 0 {
		return
	}
	_, _, _ = a[6*k-1], b[16*k-1], c[5*ldc+15]
	kernel6x16AVX2(k, &a[0], &b[0], &c[0], ldc)
}

// kernel12x32 checks bounds and runs the AVX-512 12×32 kernel.
func kernel12x32(k int, a, b, c []float32, ldc int) {
	if k <= 0 {
		return
	}
	_, _, _ = a[12*k-1], b[32*k-1], c[11*ldc+31]
	kernel12x32AVX512(k, &a[0], &b[0], &c[0], ldc)
}

//go:noescape
func kernel6x16RowAAVX2(k int, a *float32, lda int, b, c *float32, ldc int)

//go:noescape
func kernel12x32RowAAVX512(k int, a *float32, lda int, b, c *float32, ldc int)

// kernel6x16RowA checks bounds and runs the AVX2 kernel on unpacked A.
func kernel6x16RowA(k int, a []float32, lda int, b, c []float32, ldc int) {
	if k <= 0 {
		return
	}
	_, _, _ = a[5*lda+k-1], b[16*k-1], c[5*ldc+15]
	kernel6x16RowAAVX2(k, &a[0], lda, &b[0], &c[0], ldc)
}

// kernel12x32RowA checks bounds and runs the AVX-512 kernel on unpacked A.
func kernel12x32RowA(k int, a []float32, lda int, b, c []float32, ldc int) {
	if k <= 0 {
		return
	}
	_, _, _ = a[11*lda+k-1], b[32*k-1], c[11*ldc+31]
	kernel12x32RowAAVX512(k, &a[0], lda, &b[0], &c[0], ldc)
}

// asmKernels lists the assembly kernels this CPU supports, widest first.
func asmKernels() []microKernel {
	var ks []microKernel
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL {
		ks = append(ks, microKernel{name: "avx512_12x32", mr: 12, nr: 32, fn: kernel12x32, rowA: kernel12x32RowA, simd: true})
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, microKernel{name: "avx2_6x16", mr: 6, nr: 16, fn: kernel6x16, rowA: kernel6x16RowA, simd: true})
	}
	return ks
}
