// Package quant stores linear and convolution weights in 8 bits: int8
// (per-output-channel symmetric scales) or fp8 E4M3 (per-output-channel
// scales, values up to ±448). Backend wraps a backend so that every
// weight of two or more dimensions uploaded through it (the matrices and
// filters of a UNet: linear and conv weights; never give it a text
// encoder, whose embedding tables are matrices too) is kept quantised and
// dequantised for each product, just before the GEMM; 1-D weights (biases,
// norms) stay as they are. Resident weight bytes drop to about half of
// fp16's.
//
// This first implementation dequantises on the host into a scratch
// float32 weight per call, which suits the CPU backend (it uses float32
// data in place); a device kernel for the CUDA backend is still to come.
package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"sync"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// Format is a weight storage format.
type Format int

// Formats.
const (
	// None keeps weights as uploaded.
	None Format = iota
	// Int8 is symmetric per-output-channel int8: w ≈ q·s, q in [-127, 127].
	Int8
	// FP8 is fp8 E4M3 (the "fn" variant: no infinities) with a
	// per-output-channel scale: w ≈ e4m3(q)·s.
	FP8
)

// Parse reads a precision name: "int8", "fp8" (or "fp8_e4m3"); "",
// "fp16", "bf16" and "fp32" are None.
func Parse(s string) (Format, error) {
	switch s {
	case "", "fp16", "bf16", "fp32":
		return None, nil
	case "int8":
		return Int8, nil
	case "fp8", "fp8_e4m3":
		return FP8, nil
	}
	return None, fmt.Errorf("quant: precision %q: want fp16, bf16, fp32, int8 or fp8", s)
}

func (f Format) String() string {
	switch f {
	case Int8:
		return "int8"
	case FP8:
		return "fp8"
	}
	return "none"
}

// e4m3 holds the 127 non-negative finite E4M3 values, by code.
var e4m3 = func() [127]float32 {
	var t [127]float32
	for c := range 127 {
		e, m := c>>3, float64(c&7)
		if e == 0 {
			t[c] = float32(m / 8 * math.Ldexp(1, -6))
		} else {
			t[c] = float32((1 + m/8) * math.Ldexp(1, e-7))
		}
	}
	return t
}()

// encodeE4M3 rounds v (|v| ≤ 448) to the nearest E4M3 code.
func encodeE4M3(v float32) byte {
	var sign byte
	if v < 0 {
		sign, v = 0x80, -v
	}
	i := sort.Search(len(e4m3), func(i int) bool { return e4m3[i] >= v })
	switch {
	case i == len(e4m3):
		i = len(e4m3) - 1
	case i > 0 && v-e4m3[i-1] <= e4m3[i]-v:
		i--
	}
	return sign | byte(i)
}

func decodeE4M3(b byte) float32 {
	v := e4m3[b&0x7f%127]
	if b&0x80 != 0 {
		return -v
	}
	return v
}

// Weight is a quantised weight: one byte per element and one scale per
// row of the first dimension (the output channel).
type Weight struct {
	Format Format
	Shape  tensor.Shape
	Q      []byte
	Scales []float32
}

// Bytes is the storage the weight takes: its bytes and its scales.
func (w *Weight) Bytes() int64 { return int64(len(w.Q)) + 4*int64(len(w.Scales)) }

// Quantize quantises data (float32, row-major, rows = shape[0]).
func Quantize(f Format, shape tensor.Shape, data []float32) *Weight {
	rows := shape[0]
	per := len(data) / rows
	w := &Weight{Format: f, Shape: shape.Clone(), Q: make([]byte, len(data)), Scales: make([]float32, rows)}
	top := float32(127)
	if f == FP8 {
		top = 448
	}
	for r := range rows {
		row := data[r*per : (r+1)*per]
		var amax float32
		for _, v := range row {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		s := amax / top
		if s == 0 {
			s = 1
		}
		w.Scales[r] = s
		q := w.Q[r*per : (r+1)*per]
		for i, v := range row {
			x := v / s
			if f == FP8 {
				q[i] = encodeE4M3(min(max(x, -448), 448))
				continue
			}
			q[i] = byte(int8(min(max(math.Round(float64(x)), -127), 127)))
		}
	}
	return w
}

// Dequantize returns the weight as float32.
func (w *Weight) Dequantize() []float32 {
	out := make([]float32, len(w.Q))
	per := len(w.Q) / len(w.Scales)
	for r, s := range w.Scales {
		for i, b := range w.Q[r*per : (r+1)*per] {
			if w.Format == FP8 {
				out[r*per+i] = decodeE4M3(b) * s
			} else {
				out[r*per+i] = float32(int8(b)) * s
			}
		}
	}
	return out
}

// Stats count what a Backend stored.
type Stats struct {
	// Quantized counts quantised weights; Bytes is their storage, FP16Bytes
	// what they take as fp16.
	Quantized        int
	Bytes, FP16Bytes int64
	// Kept counts weights stored as uploaded (1-D); KeptFP16Bytes is their
	// size as fp16.
	Kept          int
	KeptFP16Bytes int64
}

// Backend is a backend that keeps matrices and filters quantised (see the
// package comment). Ops other than Linear and Conv2D must not be given a
// quantised weight.
type Backend struct {
	backend.Backend
	f Format

	mu    sync.Mutex
	stats Stats
}

// Wrap returns be storing weights in format f (None: be itself).
func Wrap(be backend.Backend, f Format) backend.Backend {
	if f == None {
		return be
	}
	return &Backend{Backend: be, f: f}
}

// Stats returns what the backend stored so far.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// Upload implements backend.Backend: weights of two or more dimensions
// are quantised, others uploaded as they are.
func (b *Backend) Upload(shape tensor.Shape, dt tensor.DType, raw []byte) *tensor.Tensor {
	n := int64(shape.Numel())
	if len(shape) < 2 || shape[0] == 0 {
		b.mu.Lock()
		b.stats.Kept++
		b.stats.KeptFP16Bytes += 2 * n
		b.mu.Unlock()
		return b.Backend.Upload(shape, dt, raw)
	}
	data, err := toFloat32(dt, raw, int(n))
	if err != nil {
		backend.FailErr("Upload", err)
	}
	w := Quantize(b.f, shape, data)
	b.mu.Lock()
	b.stats.Quantized++
	b.stats.Bytes += w.Bytes()
	b.stats.FP16Bytes += 2 * n
	b.mu.Unlock()
	return tensor.New(shape, dt, w)
}

// weight dequantises w into a scratch tensor of the wrapped backend (nil
// when w is not quantised); free it after the op.
func (b *Backend) weight(w *tensor.Tensor) (*tensor.Tensor, bool) {
	q, ok := w.Storage().(*Weight)
	if !ok {
		return w, false
	}
	d := q.Dequantize()
	raw := make([]byte, 4*len(d))
	for i, v := range d {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return b.Backend.Upload(q.Shape, tensor.F32, raw), true
}

// Linear implements backend.Backend, dequantising w for the product.
func (b *Backend) Linear(x, w, bias *tensor.Tensor) *tensor.Tensor {
	dw, tmp := b.weight(w)
	out := b.Backend.Linear(x, dw, bias)
	if tmp {
		b.Backend.Free(dw)
	}
	return out
}

// Conv2D implements backend.Backend, dequantising w for the convolution.
func (b *Backend) Conv2D(x, w, bias *tensor.Tensor, p backend.Conv2DParams) *tensor.Tensor {
	dw, tmp := b.weight(w)
	out := b.Backend.Conv2D(x, dw, bias, p)
	if tmp {
		b.Backend.Free(dw)
	}
	return out
}

// toFloat32 decodes n little-endian values of dt.
func toFloat32(dt tensor.DType, raw []byte, n int) ([]float32, error) {
	if len(raw) != n*dt.Size() {
		return nil, fmt.Errorf("quant: %d bytes for %d values of %s", len(raw), n, dt)
	}
	out := make([]float32, n)
	for i := range out {
		switch dt {
		case tensor.F32:
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		case tensor.BF16:
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16)
		case tensor.F16:
			out[i] = halfToFloat(binary.LittleEndian.Uint16(raw[2*i:]))
		default:
			return nil, fmt.Errorf("quant: dtype %s", dt)
		}
	}
	return out, nil
}

// halfToFloat converts an IEEE half to float32.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0:
		v := float32(man) / 1024 * float32(math.Ldexp(1, -14))
		if sign != 0 {
			v = -v
		}
		return v
	case exp == 31:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}
