package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestGemmMatchesNaive runs every micro-kernel, serially and threaded, on
// awkward sizes and both layouts of B, with strided operands.
func TestGemmMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	sizes := []int{1, 7, 33, 65, 129}
	shapes := [][3]int{{300, 17, 260}, {5, 1030, 9}, {1, 1, 600}, {150, 2, 3}}
	for _, m := range sizes {
		for _, n := range sizes {
			for _, k := range []int{1, 7, 257} {
				shapes = append(shapes, [3]int{m, n, k})
			}
		}
	}
	for _, kern := range availableKernels() {
		for _, threads := range []int{1, 3} {
			be := New(WithThreads(threads))
			be.kernel = kern
			for _, s := range shapes {
				m, n, k := s[0], s[1], s[2]
				for _, transB := range []bool{false, true} {
					lda, ldb, ldc := k+3, n+5, n+2
					if m%2 == 1 && k < 1024 {
						lda = 1024 // a stride at which A is packed, not read in place
					}
					if transB {
						ldb = k + 1
					}
					a := randn(r, m*lda)
					rows := k
					if transB {
						rows = n
					}
					b := randn(r, rows*ldb)
					c0 := randn(r, m*ldc)
					got := append([]float32(nil), c0...)
					want := append([]float32(nil), c0...)
					be.gemm(m, n, k, a, lda, b, ldb, transB, got, ldc)
					gemmNaive(0, m, n, k, a, lda, b, ldb, transB, want, ldc)
					for i := 0; i < m; i++ {
						for j := 0; j < ldc; j++ {
							g, w := got[i*ldc+j], want[i*ldc+j]
							if j >= n && g != w {
								t.Fatalf("%s threads %d %dx%dx%d transB %v: wrote outside C at (%d,%d)", kern.name, threads, m, n, k, transB, i, j)
							}
							if d := g - w; d > 1e-4*float32(k+1) || d < -1e-4*float32(k+1) {
								t.Fatalf("%s threads %d %dx%dx%d transB %v: C(%d,%d) = %v, want %v", kern.name, threads, m, n, k, transB, i, j, g, w)
							}
						}
					}
				}
			}
		}
	}
}

func benchGemm(b *testing.B, be *Backend, m, n, k int) {
	r := rand.New(rand.NewPCG(1, 1))
	a, w, c := randn(r, m*k), randn(r, n*k), make([]float32, m*n)
	b.ResetTimer()
	for range b.N {
		be.gemm(m, n, k, a, k, w, k, true, c, n)
	}
	b.ReportMetric(2*float64(m)*float64(n)*float64(k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// BenchmarkMatmul measures x·wᵀ (the Linear layout) on square and UNet shapes.
func BenchmarkMatmul(b *testing.B) {
	for _, s := range [][3]int{{256, 256, 256}, {512, 512, 512}, {1024, 1024, 1024},
		{4096, 320, 320}, {4096, 640, 320}, {4096, 2560, 320}, {4096, 320, 1280}, {1024, 640, 640}, {256, 1280, 1280}, {77, 768, 768}, {64, 1280, 1280}, {64, 10240, 1280}, {1, 1280, 320}} {
		b.Run(fmt.Sprintf("%dx%dx%d", s[0], s[1], s[2]), func(b *testing.B) { benchGemm(b, New(), s[0], s[1], s[2]) })
	}
}

// BenchmarkMicroKernels compares the micro-kernels on one thread.
func BenchmarkMicroKernels(b *testing.B) {
	for _, kern := range availableKernels() {
		b.Run(kern.name, func(b *testing.B) {
			be := New(WithThreads(1))
			be.kernel = kern
			benchGemm(b, be, 512, 512, 512)
		})
	}
}
