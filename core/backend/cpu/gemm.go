package cpu

// gemm accumulates C += A·op(B) for row-major float32 matrices: A is m×k
// with row stride lda; op(B) is k×n, stored as B (k×n, row stride ldb) or,
// when transB is set, as Bᵀ (n×k, row stride ldb); C is m×n with row
// stride ldc. Work is spread over the backend's threads.
func (be *Backend) gemm(m, n, k int, a []float32, lda int, b []float32, ldb int, transB bool, c []float32, ldc int) {
	if m == 0 || n == 0 || k == 0 {
		return
	}
	grain := max(1, (1<<16)/max(1, n*k))
	be.parallelFor(m, grain, func(lo, hi int) {
		gemmNaive(lo, hi, n, k, a, lda, b, ldb, transB, c, ldc)
	})
}

// gemmNaive is the straightforward kernel over rows [lo, hi) of C; it is
// also the reference the blocked kernel is tested against.
func gemmNaive(lo, hi, n, k int, a []float32, lda int, b []float32, ldb int, transB bool, c []float32, ldc int) {
	for i := lo; i < hi; i++ {
		ci := c[i*ldc : i*ldc+n]
		ai := a[i*lda : i*lda+k]
		if transB {
			for j := range ci {
				bj := b[j*ldb : j*ldb+k]
				var s float32
				for p, av := range ai {
					s += av * bj[p]
				}
				ci[j] += s
			}
			continue
		}
		for p, av := range ai {
			bp := b[p*ldb : p*ldb+n]
			for j, bv := range bp {
				ci[j] += av * bv
			}
		}
	}
}
