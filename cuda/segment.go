package cuda

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda/internal/cublas"
	"github.com/kiln-project/kiln/cuda/internal/cudnn"
)

// layout is how a tensor's elements lie in its buffer.
type layout uint8

const (
	rowMajor layout = iota // logical order
	nhwc                   // a 4-D (B, C, H, W) tensor stored channels-last
)

// buffer is device memory that one or more tensor handles view. Ops only
// record work: a buffer made by the unflushed segment has no address until
// the segment is planned and run (see flush).
type buffer struct {
	size int64
	addr uint64

	seg *segment // the unflushed segment that makes it, else nil
	idx int      // index in seg.bufs

	refs int // handles not yet freed

	own      bool  // addr is an allocator block of class ownSize that this buffer owns
	ownSize  int64 //
	weight   bool  // an uploaded weight
	lastRead *segment

	graph *graphEntry // set when it lives in a captured graph's arena
	epoch uint64      // the graph replay that wrote it

	dead error // non-nil: the contents are gone (why)

	alt map[tensor.DType]*buffer // copies of a bias weight in other dtypes
	q8  *buffer                  // a matrix weight's E4M3 copy (fp8.go)
}

// storage is one tensor handle's view of a buffer.
type storage struct {
	dev    *Device
	buf    *buffer
	layout layout
	freed  bool
}

// arg is a kernel argument while recording: a buffer reference (buf non-nil)
// or a scalar of size 4 or 8.
type arg struct {
	buf  *buffer
	off  int64
	v    uint64
	size uint8
}

func pbuf(b *buffer) arg { return arg{buf: b, size: 8} }
func pnull() arg         { return arg{size: 8} }
func i32(v int) arg      { return arg{v: uint64(uint32(int32(v))), size: 4} }
func u32(v int) arg      { return arg{v: uint64(uint32(v)), size: 4} }
func f32(v float32) arg  { return arg{v: uint64(math.Float32bits(v)), size: 4} }

type recKind uint8

const (
	recKernel recKind = iota
	recGemm
	recUpload
	recMemset
	recCudnn
	recLt
)

// bufRef is a buffer plus a byte offset.
type bufRef struct {
	buf *buffer
	off int64
}

// record is one unit of recorded work.
type record struct {
	kind       recKind
	kernel     string
	cfg        launchCfg
	args       []arg
	gemm       cublas.Gemm // pointers unresolved; a, b, c give them
	ga, gb, gc bufRef
	dnn        cudnn.ConvShape // recCudnn: x = ga, w = gb, y = gc
	algo       int
	lt         cublas.LtShape // recLt: A = ga, B = gb, D = gc
	gz, gbias  bufRef         // recCudnn, recLt: residual (C) and bias, optional
	gsa, gsb   bufRef         // recLt with lt.FP8: the scales of A and B
	beta       float32        // recLt
	data       []byte         // upload source
	dst        *buffer        // upload or memset target
	val        byte           // memset value
	writes     *buffer
	reads      []*buffer
}

// segment is the work recorded since the last flush.
type segment struct {
	recs []*record
	bufs []*buffer
	// raw is the encoding of recs as recorded (before fusion and dead-code
	// removal), buffers named by their index in bufs: with the buffers'
	// escape bits it keys the graph cache.
	raw        []byte
	first      string // encoding of the first record
	lastUpload int    // index of the last upload record, -1 for none
}

// newBuffer makes a buffer of n bytes produced by the current segment.
func (d *Device) newBuffer(n int64) *buffer {
	if n < 16 {
		n = 16
	}
	n = (n + 255) &^ 255
	b := &buffer{size: n, seg: d.seg, idx: len(d.seg.bufs)}
	d.seg.bufs = append(d.seg.bufs, b)
	return b
}

// check fails op when b cannot be read.
func (d *Device) checkReadable(op string, b *buffer) {
	if b.dead != nil {
		fail(op, "%v", b.dead)
	}
	if b.graph != nil && b.epoch != b.graph.epoch {
		fail(op, "tensor overwritten: it was made by a captured CUDA graph step that has been replayed since (keep no activation across steps, or set KILN_CUDA_GRAPHS=0)")
	}
}

// launch records a kernel; out is written, the other buffer arguments read.
func (d *Device) launch(kernel string, cfg launchCfg, out *buffer, args ...arg) {
	r := &record{kind: recKernel, kernel: kernel, cfg: cfg, args: args, writes: out}
	for _, a := range args {
		if a.buf != nil && a.buf != out {
			r.reads = append(r.reads, a.buf)
		}
	}
	d.add(r)
}

// add appends r to the segment and notes which buffers it reads.
func (d *Device) add(r *record) {
	seg := d.seg
	for _, b := range r.reads {
		b.lastRead = seg
	}
	if r.writes != nil && r.writes.seg != seg && !d.scratch {
		panic("cuda: internal error: a record writes a buffer of another segment")
	}
	if len(seg.recs) == 0 {
		seg.lastUpload = -1
	}
	seg.recs = append(seg.recs, r)
	if d.scratch {
		return
	}
	n := len(seg.raw)
	seg.raw = encodeRecord(seg.raw, seg, r)
	enc := seg.raw[n:]
	if r.kind == recUpload {
		seg.lastUpload = len(seg.recs) - 1
	}
	if len(seg.recs) == 1 {
		seg.first = string(enc)
		d.spec = nil
		if d.opts.Graphs && d.opts.Speculate && !d.profiling {
			if g := d.byFirst[seg.first]; g != nil {
				d.spec = &speculation{seg: seg, g: g}
			}
		}
	}
	if sp := d.spec; sp != nil && sp.seg == seg && !sp.failed {
		d.speculate(sp, r, enc)
	}
}

// gemmRecord records a matrix product whose C is out.
func (d *Device) gemmRecord(g cublas.Gemm, a, b bufRef, out bufRef) {
	r := &record{kind: recGemm, gemm: g, ga: a, gb: b, gc: out, writes: out.buf, reads: []*buffer{a.buf, b.buf}}
	if g.Beta != 0 {
		r.reads = append(r.reads, out.buf)
	}
	d.add(r)
}

// cudnnRecord records a cuDNN convolution y = conv(x, w).
func (d *Device) cudnnRecord(sh cudnn.ConvShape, algo int, x, w, y *buffer) {
	d.add(&record{kind: recCudnn, dnn: sh, algo: algo, ga: bufRef{buf: x}, gb: bufRef{buf: w}, gc: bufRef{buf: y}, writes: y, reads: []*buffer{x, w}})
}

// cudnnBiasRecord records the fused cuDNN y = conv(x, w) + bias.
func (d *Device) cudnnBiasRecord(sh cudnn.ConvShape, algo int, x, w, bias, y *buffer) {
	d.add(&record{kind: recCudnn, dnn: sh, algo: algo, ga: bufRef{buf: x}, gb: bufRef{buf: w}, gc: bufRef{buf: y},
		gbias: bufRef{buf: bias}, writes: y, reads: []*buffer{x, w, bias}})
}

// ltRecord records the cuBLASLt product out = op(a)·op(b) (+ bias).
func (d *Device) ltRecord(sh cublas.LtShape, a, b, bias, out *buffer) {
	r := &record{kind: recLt, lt: sh, ga: bufRef{buf: a}, gb: bufRef{buf: b}, gc: bufRef{buf: out}, writes: out, reads: []*buffer{a, b}}
	if bias != nil {
		r.gbias = bufRef{buf: bias}
		r.reads = append(r.reads, bias)
	}
	d.add(r)
}

// lt8Record records the fp8 cuBLASLt product out = sa·sb·op(a)·op(b)
// (+ bias), a and b E4M3 with their float32 scales at sa and sb.
func (d *Device) lt8Record(sh cublas.LtShape, a, b bufRef, sa, sb bufRef, bias, out *buffer) {
	sh.FP8 = true
	r := &record{kind: recLt, lt: sh, ga: a, gb: b, gsa: sa, gsb: sb, gc: bufRef{buf: out}, writes: out, reads: []*buffer{a.buf, b.buf}}
	for _, x := range []*buffer{sa.buf, sb.buf} {
		if x != a.buf && x != b.buf {
			r.reads = append(r.reads, x)
		}
	}
	if bias != nil {
		r.gbias = bufRef{buf: bias}
		r.reads = append(r.reads, bias)
	}
	d.add(r)
}

// uploadRecord records copying host bytes into dst at flush.
func (d *Device) uploadRecord(dst *buffer, data []byte) {
	d.add(&record{kind: recUpload, dst: dst, data: data, writes: dst})
}

// keyEncoder builds the byte string that identifies a segment's work for
// the graph cache: kernels, launch shapes, scalars, external addresses, and
// internal buffers by creation index.
type keyEncoder struct{ b []byte }

func (k *keyEncoder) u64(v uint64) { k.b = binary.LittleEndian.AppendUint64(k.b, v) }
func (k *keyEncoder) u32(v uint32) { k.b = binary.LittleEndian.AppendUint32(k.b, v) }
func (k *keyEncoder) str(s string) { k.u32(uint32(len(s))); k.b = append(k.b, s...) }

func (k *keyEncoder) ref(seg *segment, b *buffer, off int64) {
	switch {
	case b == nil:
		k.u32(0)
		return
	case b.seg == seg:
		k.u32(1)
		k.u32(uint32(b.idx))
	default:
		k.u32(2)
		k.u64(b.addr)
	}
	k.u64(uint64(off))
}

func (k *keyEncoder) gemm(g *cublas.Gemm) {
	for _, v := range []int64{int64(g.TransA), int64(g.TransB), int64(g.M), int64(g.N), int64(g.K),
		int64(math.Float32bits(g.Alpha)), int64(math.Float32bits(g.Beta)), int64(g.AType), int64(g.LDA), g.StrideA,
		int64(g.BType), int64(g.LDB), g.StrideB, int64(g.CType), int64(g.LDC), g.StrideC, int64(g.Batch), int64(g.Compute)} {
		k.u64(uint64(v))
	}
}

// encodeRecord appends r's encoding to dst.
func encodeRecord(dst []byte, seg *segment, r *record) []byte {
	k := keyEncoder{b: dst}
	k.u32(uint32(r.kind))
	switch r.kind {
	case recKernel:
		k.str(r.kernel)
		for _, v := range r.cfg.grid {
			k.u32(v)
		}
		for _, v := range r.cfg.block {
			k.u32(v)
		}
		k.u32(r.cfg.shmem)
		k.ref(seg, r.writes, 0)
		for _, a := range r.args {
			if a.buf != nil {
				k.ref(seg, a.buf, a.off)
			} else {
				k.u32(3)
				k.u64(a.v)
			}
		}
	case recGemm:
		k.gemm(&r.gemm)
		k.ref(seg, r.ga.buf, r.ga.off)
		k.ref(seg, r.gb.buf, r.gb.off)
		k.ref(seg, r.gc.buf, r.gc.off)
	case recUpload:
		k.ref(seg, r.writes, 0)
		k.u64(uint64(len(r.data)))
	case recMemset:
		k.ref(seg, r.dst, 0)
		k.u32(uint32(r.val))
	case recCudnn:
		sh := r.dnn
		for _, v := range []int{sh.DataType, sh.N, sh.C, sh.H, sh.W, sh.K, sh.R, sh.S, sh.PadH, sh.PadW, sh.Stride, sh.OutH, sh.OutW, r.algo} {
			k.u64(uint64(v))
		}
		k.ref(seg, r.ga.buf, r.ga.off)
		k.ref(seg, r.gb.buf, r.gb.off)
		k.ref(seg, r.gc.buf, r.gc.off)
		k.ref(seg, r.gz.buf, r.gz.off)
		k.ref(seg, r.gbias.buf, r.gbias.off)
	case recLt:
		sh := r.lt
		for _, v := range []int{int(sh.TransA), int(sh.TransB), sh.M, sh.N, sh.K, sh.LDA, sh.LDB, sh.LDC, int(sh.Type), int(math.Float32bits(r.beta))} {
			k.u64(uint64(v))
		}
		if sh.Bias {
			k.u32(1)
		}
		if sh.FP8 {
			k.u32(8)
			k.ref(seg, r.gsa.buf, r.gsa.off)
			k.ref(seg, r.gsb.buf, r.gsb.off)
		}
		k.ref(seg, r.ga.buf, r.ga.off)
		k.ref(seg, r.gb.buf, r.gb.off)
		k.ref(seg, r.gc.buf, r.gc.off)
		k.ref(seg, r.gz.buf, r.gz.off)
		k.ref(seg, r.gbias.buf, r.gbias.off)
	}
	return k.b
}

// fullKey is the segment's raw encoding followed by which buffers outlive
// it (their handles are not freed), the other input of the memory plan.
func (seg *segment) fullKey() string {
	k := make([]byte, len(seg.raw), len(seg.raw)+len(seg.bufs)/8+16)
	copy(k, seg.raw)
	return string(seg.appendEscapes(k))
}

// escapeKey is the part of fullKey after the raw encoding.
func (seg *segment) escapeKey() string { return string(seg.appendEscapes(nil)) }

func (seg *segment) appendEscapes(k []byte) []byte {
	k = binary.LittleEndian.AppendUint32(k, uint32(len(seg.bufs)))
	var bits byte
	for i, b := range seg.bufs {
		if b.refs > 0 {
			bits |= 1 << (i % 8)
		}
		if i%8 == 7 || i == len(seg.bufs)-1 {
			k = append(k, bits)
			bits = 0
		}
	}
	return k
}

// describe names a tensor for error messages.
func describe(t *tensor.Tensor) string {
	if t == nil {
		return "nil"
	}
	return fmt.Sprintf("%s %s", t.Shape(), t.DType())
}
