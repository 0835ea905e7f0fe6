package cuda

import (
	"github.com/kiln-project/kiln/cuda/internal/cublas"
	"github.com/kiln-project/kiln/cuda/internal/cudnn"
)

// cudnnCall is a cuDNN convolution with resolved addresses; with bias set
// it is the fused y = conv(x, w) + bias (+ z) call.
type cudnnCall struct {
	shape         cudnn.ConvShape
	algo          int
	x, w, y, z, b uint64
}

// ltCall is a cuBLASLt product D = op(A)·op(B) + beta·C (+ bias) with
// resolved addresses.
type ltCall struct {
	shape         cublas.LtShape
	a, b, c, d, e uint64 // e: bias
	sa, sb        uint64 // FP8 shapes: the scales of A and B
	beta          float32
}

// karg is one resolved kernel argument: its bits and its size in bytes.
type karg struct {
	v    uint64
	size uint8
}

// launchCfg is a kernel's grid, block and dynamic shared memory.
type launchCfg struct {
	grid, block [3]uint32
	shmem       uint32
}

// graphHandle names an instantiated, launchable graph of an engine.
type graphHandle uintptr

// eventHandle names a timing event of an engine.
type eventHandle uintptr

// engine is what the backend needs from a device: memory, copies, kernel
// launches, matrix products and graph capture, all in stream order. The CUDA
// implementation (cudaEngine) runs on the device's locked OS thread; tests
// use an emulation in Go. Device addresses are plain integers.
type engine interface {
	alloc(n int64) (uint64, error)
	free(p uint64)
	// upload copies src to dst in stream order; src may be reused on return.
	upload(dst uint64, src []byte) error
	// download waits for all queued work, then copies src to dst.
	download(dst []byte, src uint64) error
	memset(dst uint64, n int64, v byte) error
	launch(kernel string, cfg launchCfg, args []karg) error
	// hasKernel reports whether a kernel of that name can be launched (the
	// portable image's, or the Hopper image's where it loaded).
	hasKernel(name string) bool
	gemm(g *cublas.Gemm) error
	beginCapture() error
	endCapture() (graphHandle, int, error) // the graph and its node count
	launchGraph(g graphHandle) error
	destroyGraph(g graphHandle)
	sync() error
	memInfo() (free, total int64, err error)
	newEvent() (eventHandle, error)
	record(e eventHandle) error
	elapsed(a, b eventHandle) (float32, error)
	destroyEvent(e eventHandle)
	// hasCuDNN reports whether convolutions can go to cuDNN.
	hasCuDNN() bool
	// cudnnFind times cuDNN's algorithms for shape on scratch buffers.
	cudnnFind(shape cudnn.ConvShape, x, w, y uint64) ([]cudnn.AlgoPerf, error)
	cudnnConv(c *cudnnCall) error
	// hasLt reports whether cuBLASLt products are available.
	hasLt() bool
	ltMatmul(c *ltCall) error
	// hostAlloc returns n bytes of pinned (page-locked) host memory.
	hostAlloc(n int64) ([]byte, error)
	// hostFree frees memory from hostAlloc.
	hostFree(b []byte)
	// copyOut queues a copy of len(dst) device bytes at src into pinned
	// dst, in stream order; it is complete after sync.
	copyOut(dst []byte, src uint64) error
	// copyIn queues a copy of pinned src to dst in stream order; src must
	// stay unchanged until sync.
	copyIn(dst uint64, src []byte) error
	close()
}
