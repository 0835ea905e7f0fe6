// Package cpu is the reference backend: every op of backend.Backend in
// float32 on the host, contiguous row-major, multi-threaded across
// runtime.GOMAXPROCS goroutines.
//
// Storage. A tensor of this backend holds a *handle: one reference to a
// buffer of float32 shared with the tensor's reshaped views. Weights
// uploaded as F32 alias the caller's bytes (a memory map) when they are
// 4-byte aligned; F16 and BF16 are converted once. Activations come from a
// pool of buffers keyed by exact length, which Free refills once every view
// of a buffer is freed.
//
// Compute. Matrix products (Linear, Conv2D, both products of Attention) go
// through one cache-blocked GEMM: op(B) is packed in blocks of kc rows by nr
// columns and A in blocks of mr rows, and a register-tiled micro-kernel
// multiplies them: AVX-512 12×32 or AVX2/FMA 6×16 in assembly on amd64
// (kernel_amd64.s), else pure-Go kernels (build tag purego forces those).
// Conv2D never stores the patch matrix: the GEMM packs its blocks straight
// from the image. Attention packs each head's keys and values once and
// computes scores for 32 query rows at a time, so a worker holds one block
// of one head's scores. Softmax exp, SiLU and GELU have AVX2 versions with
// scalar fallbacks that tests hold equal.
//
// Adding an op (other packages' helpers may append ops in extra_*.go
// files): validate shapes first and report errors with backend.Fail naming
// the op and the shapes; read inputs with data(op, t); allocate the output
// with be.newTensor(shape), whose contents are undefined until the op
// writes every element; split large loops with be.parallelFor; multiply
// matrices with be.gemm, which accumulates into C.
package cpu
