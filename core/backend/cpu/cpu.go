package cpu

import (
	"runtime"
	"sync"
	"unsafe"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// Backend is the CPU implementation of backend.Backend. Like every backend
// it is not safe for concurrent use; ops themselves use all threads.
type Backend struct {
	threads int
	pool    pool
	kernel  *microKernel // GEMM micro-kernel
	vec     bool         // use the assembly vector helpers (exp, max)
	work    gemmWorkPool // GEMM packing space
	scores  sync.Pool    // attention score blocks (*[]float32)
}

var _ backend.Backend = (*Backend)(nil)

// Option configures a Backend.
type Option func(*Backend)

// WithThreads sets how many goroutines an op may use (default
// runtime.GOMAXPROCS(0)); n < 1 means the default.
func WithThreads(n int) Option {
	return func(b *Backend) {
		if n >= 1 {
			b.threads = n
		}
	}
}

// WithPoolLimit caps the bytes of freed activation buffers kept for reuse
// (default 2 GiB); 0 disables pooling.
func WithPoolLimit(bytes int64) Option {
	return func(b *Backend) { b.pool.limit = bytes / 4 }
}

// New returns a CPU backend.
func New(opts ...Option) *Backend {
	b := &Backend{threads: runtime.GOMAXPROCS(0), kernel: bestKernel(), vec: hasVec()}
	b.pool.limit = (2 << 30) / 4
	for _, o := range opts {
		o(b)
	}
	b.pool.free = make(map[int][][]float32)
	return b
}

// Name returns "cpu".
func (b *Backend) Name() string { return "cpu" }

// buffer is the float32 storage shared by a tensor and its reshaped views.
type buffer struct {
	data   []float32
	refs   int  // live handles
	pooled bool // owned by the backend: returns to the pool when refs hits 0
}

// handle is one tensor's reference to a buffer.
type handle struct {
	buf   *buffer
	freed bool
}

// pool keeps freed activation buffers by exact length.
type pool struct {
	mu     sync.Mutex
	free   map[int][][]float32
	held   int64 // floats currently held
	limit  int64 // most floats to hold
	poison bool  // tests: fill new buffers with NaN
}

func (p *pool) get(n int) []float32 {
	p.mu.Lock()
	list := p.free[n]
	if k := len(list); k > 0 {
		s := list[k-1]
		p.free[n] = list[:k-1]
		p.held -= int64(n)
		p.mu.Unlock()
		p.fillPoison(s)
		return s
	}
	p.mu.Unlock()
	s := make([]float32, n)
	p.fillPoison(s)
	return s
}

// fillPoison fills s with NaN in tests, so that an op which fails to write
// every output element is caught.
func (p *pool) fillPoison(s []float32) {
	if p.poison {
		nan := float32NaN()
		for i := range s {
			s[i] = nan
		}
	}
}

func (p *pool) put(s []float32) {
	n := len(s)
	if n == 0 {
		return
	}
	p.mu.Lock()
	if p.held+int64(n) <= p.limit {
		p.free[n] = append(p.free[n], s)
		p.held += int64(n)
	}
	p.mu.Unlock()
}

// held reports the floats currently kept in the pool (for tests).
func (p *pool) size() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

// newTensor allocates an activation of the given shape from the pool. Its
// contents are undefined: the op must write every element.
func (b *Backend) newTensor(shape tensor.Shape) (*tensor.Tensor, []float32) {
	n := shape.Numel()
	data := b.pool.get(n)
	buf := &buffer{data: data, refs: 1, pooled: true}
	return tensor.New(shape, tensor.F32, &handle{buf: buf}), data
}

// wrap makes a tensor over data that the backend does not own (weights).
func wrap(shape tensor.Shape, data []float32, pooled bool) *tensor.Tensor {
	return tensor.New(shape, tensor.F32, &handle{buf: &buffer{data: data, refs: 1, pooled: pooled}})
}

// data returns t's float32 storage, failing op when t is nil, freed, or
// not a tensor of this backend.
func data(op string, t *tensor.Tensor) []float32 {
	if t == nil {
		backend.Fail(op, "nil tensor")
	}
	h, ok := t.Storage().(*handle)
	if !ok {
		backend.Fail(op, "tensor %s does not belong to the cpu backend", t)
	}
	if h.freed || h.buf.data == nil && t.Numel() > 0 {
		backend.Fail(op, "use of freed tensor %s", t)
	}
	return h.buf.data
}

// Upload makes a weight tensor from little-endian raw bytes. F32 data that
// is 4-byte aligned is used in place; F16 and BF16 are converted once.
func (b *Backend) Upload(shape tensor.Shape, dt tensor.DType, raw []byte) *tensor.Tensor {
	const op = "Upload"
	for _, d := range shape {
		if d < 0 {
			backend.Fail(op, "negative dimension in shape %s", shape)
		}
	}
	n := shape.Numel()
	if dt.Size() == 0 {
		backend.Fail(op, "unsupported dtype %s", dt)
	}
	if len(raw) != n*dt.Size() {
		backend.Fail(op, "shape %s of %s needs %d bytes, got %d", shape, dt, n*dt.Size(), len(raw))
	}
	if n == 0 {
		return wrap(shape, []float32{}, false)
	}
	switch dt {
	case tensor.F32:
		if littleEndian() && uintptr(unsafe.Pointer(&raw[0]))%4 == 0 {
			return wrap(shape, unsafe.Slice((*float32)(unsafe.Pointer(&raw[0])), n), false)
		}
		out := make([]float32, n)
		decodeF32(out, raw)
		return wrap(shape, out, false)
	case tensor.F16:
		out := make([]float32, n)
		decodeF16(out, raw)
		return wrap(shape, out, false)
	case tensor.BF16:
		out := make([]float32, n)
		decodeBF16(out, raw)
		return wrap(shape, out, false)
	}
	backend.Fail(op, "unsupported dtype %s", dt)
	return nil
}

// FromFloat32 copies data into a new activation tensor.
func (b *Backend) FromFloat32(shape tensor.Shape, src []float32) *tensor.Tensor {
	for _, d := range shape {
		if d < 0 {
			backend.Fail("FromFloat32", "negative dimension in shape %s", shape)
		}
	}
	if shape.Numel() != len(src) {
		backend.Fail("FromFloat32", "shape %s holds %d elements, data has %d", shape, shape.Numel(), len(src))
	}
	t, dst := b.newTensor(shape)
	copy(dst, src)
	return t
}

// ToFloat32 returns a copy of t's data.
func (b *Backend) ToFloat32(t *tensor.Tensor) []float32 {
	src := data("ToFloat32", t)
	out := make([]float32, len(src))
	copy(out, src)
	return out
}

// Free releases tensors; a buffer returns to the pool once every view of
// it is freed. Freeing a tensor twice, or a nil tensor, does nothing.
func (b *Backend) Free(ts ...*tensor.Tensor) {
	for _, t := range ts {
		if t == nil {
			continue
		}
		h, ok := t.Storage().(*handle)
		if !ok || h.freed {
			continue
		}
		h.freed = true
		h.buf.refs--
		if h.buf.refs == 0 && h.buf.pooled {
			b.pool.put(h.buf.data)
			h.buf.data = nil
		}
	}
}

// Reshape returns a view of x with a new shape of the same element count;
// the view shares x's data.
func (b *Backend) Reshape(x *tensor.Tensor, shape tensor.Shape) *tensor.Tensor {
	data("Reshape", x)
	for _, d := range shape {
		if d < 0 {
			backend.Fail("Reshape", "negative dimension in shape %s", shape)
		}
	}
	if shape.Numel() != x.Numel() {
		backend.Fail("Reshape", "cannot reshape %s (%d elements) to %s (%d elements)", x.Shape(), x.Numel(), shape, shape.Numel())
	}
	h := x.Storage().(*handle)
	h.buf.refs++
	return tensor.New(shape, tensor.F32, &handle{buf: h.buf})
}
