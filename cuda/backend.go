package cuda

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda/internal/half"
)

// Backend is a view of a Device that implements backend.Backend with
// activations of one dtype (F16 by default; BF16 or F32 for the VAE). Ops
// record work on the device; ToFloat32 runs it. Matrix weights are stored
// in the view's dtype, 1-D weights (biases, norm scales) in float32.
// Views of one device share its stream and must be used from one goroutine
// at a time.
type Backend struct {
	d   *Device
	dt  tensor.DType
	grp *Group // uploads join it; nil: ungrouped
}

var _ backend.Backend = (*Backend)(nil)

// Backend returns a view of d computing in dt (F16, BF16 or F32).
func (d *Device) Backend(dt tensor.DType) *Backend {
	switch dt {
	case tensor.F16, tensor.BF16, tensor.F32:
	default:
		dt = tensor.F16
	}
	return &Backend{d: d, dt: dt}
}

// WithActivationDType returns a view of the same device computing in dt,
// e.g. BF16 or F32 for a VAE, whose activations overflow fp16.
func (b *Backend) WithActivationDType(dt tensor.DType) backend.Backend {
	v := b.d.Backend(dt)
	v.grp = b.grp
	return v
}

// ActivationDType returns the dtype of the view's activations.
func (b *Backend) ActivationDType() tensor.DType { return b.dt }

// Device returns the device behind the view.
func (b *Backend) Device() *Device { return b.d }

// Name returns "cuda:N".
func (b *Backend) Name() string { return fmt.Sprintf("cuda:%d", b.d.info.Ordinal) }

// fail panics with a backend error.
func fail(op, format string, args ...any) { backend.Fail(op, format, args...) }

// maxElems bounds tensors: kernels index with 32-bit unsigned integers.
const maxElems = 1<<31 - 1

// st returns t's storage after checking that it belongs to this device and
// can be read.
func (b *Backend) st(op string, t *tensor.Tensor) *storage {
	if t == nil {
		fail(op, "nil tensor")
	}
	s, ok := t.Storage().(*storage)
	if !ok || s.dev != b.d {
		fail(op, "tensor %s does not belong to %s", describe(t), b.Name())
	}
	if s.freed {
		fail(op, "use of freed tensor %s", describe(t))
	}
	b.d.checkReadable(op, s.buf)
	return s
}

// wrap makes a tensor handle over buf and registers it with the garbage
// collector, so that a handle dropped without Free still releases memory.
func (b *Backend) wrap(shape tensor.Shape, dt tensor.DType, lay layout, buf *buffer) *tensor.Tensor {
	s := &storage{dev: b.d, buf: buf, layout: lay}
	buf.refs++
	t := tensor.New(shape, dt, s)
	runtime.AddCleanup(t, b.d.enqueueCleanup, s)
	return t
}

// newOut makes a buffer for an op's result of the given shape and dtype.
func (b *Backend) newOut(op string, shape tensor.Shape, dt tensor.DType) *buffer {
	n := shape.Numel()
	if n > maxElems {
		fail(op, "tensor %s has more than 2^31 elements", shape)
	}
	return b.d.newBuffer(int64(n) * int64(dt.Size()))
}

func checkShape(op string, shape tensor.Shape) {
	for _, d := range shape {
		if d < 0 {
			fail(op, "negative dimension in shape %s", shape)
		}
	}
	if shape.Numel() > maxElems {
		fail(op, "tensor %s has more than 2^31 elements", shape)
	}
}

func suffix(dt tensor.DType) string {
	switch dt {
	case tensor.F16:
		return "_f16"
	case tensor.BF16:
		return "_bf16"
	}
	return "_f32"
}

// Upload makes a weight tensor from raw little-endian data. It is copied to
// the device at once (through pinned staging buffers) and converted there:
// 1-D tensors to float32, others to the view's dtype, 4-D convolution
// filters to the channels-last (KRSC) layout.
func (b *Backend) Upload(shape tensor.Shape, dt tensor.DType, raw []byte) *tensor.Tensor {
	const op = "Upload"
	checkShape(op, shape)
	if dt.Size() == 0 {
		fail(op, "unsupported dtype %s", dt)
	}
	n := shape.Numel()
	if len(raw) != n*dt.Size() {
		fail(op, "shape %s of %s needs %d bytes, got %d", shape, dt, n*dt.Size(), len(raw))
	}
	target := b.dt
	if len(shape) <= 1 {
		target = tensor.F32
	}
	lay := rowMajor
	if len(shape) == 4 {
		lay = nhwc
	}
	key := keyFor(shape, dt, target, lay, raw)
	shared, err := b.d.sharedWeight(key)
	if err != nil {
		backend.FailErr(op, err)
	}
	if shared != nil {
		// The device holds these bytes already: share them.
		b.d.wt.shared.Add(shared.size)
		b.hold(shared)
		return b.wrap(shape, target, lay, shared)
	}
	buf := &buffer{size: max(16, (int64(n)*int64(target.Size())+255)&^255), weight: true}
	if sp := b.d.spec; sp != nil {
		// A graph launched early could read this memory before the
		// upload lands (stream order): it must not be trusted.
		sp.failed, sp.tainted = true, true
	}
	err = b.d.run(func() error { return b.d.uploadWeight(buf, shape, dt, target, lay, raw) })
	if err != nil {
		backend.FailErr(op, err)
	}
	b.d.noteWeight(buf, key)
	b.hold(buf)
	return b.wrap(shape, target, lay, buf)
}

// hold records that the view's group (or, for an ungrouped view, an
// upload that is never offloaded) holds the weight buf.
func (b *Backend) hold(buf *buffer) {
	if b.grp != nil && !b.grp.closed {
		b.grp.add(buf)
		return
	}
	st := b.d.wt.state[buf]
	st.holders++
	st.owners++
}

// FromFloat32 copies host data into a new activation tensor of the view's
// dtype (4-D tensors are stored channels-last).
func (b *Backend) FromFloat32(shape tensor.Shape, data []float32) *tensor.Tensor {
	const op = "FromFloat32"
	checkShape(op, shape)
	if shape.Numel() != len(data) {
		fail(op, "shape %s holds %d elements, data has %d", shape, shape.Numel(), len(data))
	}
	raw := encode(data, b.dt)
	buf := b.newOut(op, shape, b.dt)
	if len(shape) == 4 && shape[1] > 1 && shape[2]*shape[3] > 1 {
		// Images go channels-last on the device: upload as given, then
		// transpose there (off the host's critical path).
		tmp := b.newOut(op, shape, b.dt)
		b.d.uploadRecord(tmp, raw)
		b.transpose(buf, tmp, b.dt, shape[0], shape[1], shape[2]*shape[3])
		return b.wrap(shape, b.dt, nhwc, buf)
	}
	b.d.uploadRecord(buf, raw)
	lay := rowMajor
	if len(shape) == 4 {
		lay = nhwc // one channel or one pixel: both orders coincide
	}
	return b.wrap(shape, b.dt, lay, buf)
}

// ToFloat32 runs the recorded work and returns a host copy of t.
func (b *Backend) ToFloat32(t *tensor.Tensor) []float32 {
	const op = "ToFloat32"
	s := b.st(op, t)
	buf := s.buf
	var tmp *buffer
	if s.layout == nhwc {
		sh := t.Shape()
		tmp = b.d.newBuffer(int64(t.Numel()) * int64(t.DType().Size()))
		b.transpose(tmp, buf, t.DType(), sh[0], sh[2]*sh[3], sh[1])
		tmp.refs++ // keep it through the flush
		buf = tmp
	}
	raw := make([]byte, t.Numel()*t.DType().Size())
	err := b.d.run(func() error {
		if err := b.d.flush(); err != nil {
			return err
		}
		return b.d.noteErr(b.d.eng.download(raw, buf.addr))
	})
	if tmp != nil {
		tmp.refs--
		tmp.dead = errFreed
		b.d.releaseBuffer(tmp)
	}
	if err != nil {
		backend.FailErr(op, err)
	}
	return decode(raw, t.DType())
}

// Free releases tensors; memory returns to the device once no handle and no
// recorded work needs it. Nil, foreign and already freed tensors are ignored.
func (b *Backend) Free(ts ...*tensor.Tensor) {
	for _, t := range ts {
		if t == nil {
			continue
		}
		s, ok := t.Storage().(*storage)
		if !ok || s.dev != b.d {
			continue
		}
		b.d.dropRef(s)
	}
}

// encode converts float32 values to little-endian bytes of dt, in
// parallel for large inputs (a UNet step's text context).
func encode(src []float32, dt tensor.DType) []byte {
	raw := make([]byte, len(src)*dt.Size())
	const chunk = 32 << 10
	if len(src) > 2*chunk {
		var wg sync.WaitGroup
		for lo := 0; lo < len(src); lo += chunk {
			hi := min(len(src), lo+chunk)
			wg.Add(1)
			go func() {
				defer wg.Done()
				encodeInto(raw[lo*dt.Size():hi*dt.Size()], src[lo:hi], dt)
			}()
		}
		wg.Wait()
		return raw
	}
	encodeInto(raw, src, dt)
	return raw
}

func encodeInto(raw []byte, src []float32, dt tensor.DType) {
	switch dt {
	case tensor.F16:
		half.EncodeF16(raw, src)
	case tensor.BF16:
		half.EncodeBF16(raw, src)
	default:
		half.EncodeF32(raw, src)
	}
}

// decode converts little-endian bytes of dt to float32 values, in
// parallel for large outputs.
func decode(raw []byte, dt tensor.DType) []float32 {
	out := make([]float32, len(raw)/dt.Size())
	const chunk = 32 << 10
	if len(out) > 2*chunk {
		var wg sync.WaitGroup
		for lo := 0; lo < len(out); lo += chunk {
			hi := min(len(out), lo+chunk)
			wg.Add(1)
			go func() {
				defer wg.Done()
				decodeInto(out[lo:hi], raw[lo*dt.Size():hi*dt.Size()], dt)
			}()
		}
		wg.Wait()
		return out
	}
	decodeInto(out, raw, dt)
	return out
}

func decodeInto(out []float32, raw []byte, dt tensor.DType) {
	switch dt {
	case tensor.F16:
		half.DecodeF16(out, raw)
	case tensor.BF16:
		half.DecodeBF16(out, raw)
	default:
		half.DecodeF32(out, raw)
	}
}
