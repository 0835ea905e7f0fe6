package abi

import (
	"encoding/binary"
	"errors"
	"math"
	"unsafe"
)

// Encoder appends ABI values to a byte slice: integers and floats
// little-endian with fixed width, strings and byte strings as a u32 length
// followed by the bytes, lists as a u32 count followed by the items.
type Encoder struct {
	buf []byte
}

// NewEncoder returns an encoder that appends to dst[:0], reusing its capacity.
func NewEncoder(dst []byte) *Encoder { return &Encoder{buf: dst[:0]} }

// Bytes returns the encoded message.
func (e *Encoder) Bytes() []byte { return e.buf }

// U8 appends one byte.
func (e *Encoder) U8(v uint8) { e.buf = append(e.buf, v) }

// Bool appends a byte 1 for true, 0 for false.
func (e *Encoder) Bool(v bool) {
	if v {
		e.U8(1)
	} else {
		e.U8(0)
	}
}

// U32 appends a little-endian uint32.
func (e *Encoder) U32(v uint32) { e.buf = binary.LittleEndian.AppendUint32(e.buf, v) }

// I32 appends a little-endian two's complement int32.
func (e *Encoder) I32(v int32) { e.U32(uint32(v)) }

// U64 appends a little-endian uint64.
func (e *Encoder) U64(v uint64) { e.buf = binary.LittleEndian.AppendUint64(e.buf, v) }

// I64 appends a little-endian two's complement int64.
func (e *Encoder) I64(v int64) { e.U64(uint64(v)) }

// F64 appends an IEEE 754 binary64, little-endian.
func (e *Encoder) F64(v float64) { e.U64(math.Float64bits(v)) }

// Str appends a u32 byte length and the string's bytes.
func (e *Encoder) Str(s string) {
	e.U32(uint32(len(s)))
	e.buf = append(e.buf, s...)
}

// Blob appends a u32 byte length and the bytes.
func (e *Encoder) Blob(b []byte) {
	e.U32(uint32(len(b)))
	e.buf = append(e.buf, b...)
}

// ErrTruncated is returned when a message ends before its last field.
var ErrTruncated = errors.New("abi: message truncated")

// Decoder reads ABI values from a byte slice. The first error sticks:
// later reads return zero values and Err reports it. The primitive reads
// are small enough to be inlined, which matters in Wasm guests, where
// every call costs a deadline check.
type Decoder struct {
	b      []byte
	off    int
	err    error
	intern map[string]string
	alias  bool
}

// Alias makes the decoder return strings that share the input's memory
// instead of copies: no allocation, but the strings are only valid while
// the input is. Guest SDKs use it for inputs, which live until the hook
// returns.
func (d *Decoder) Alias() { d.alias = true }

// NewDecoder returns a decoder over b.
func NewDecoder(b []byte) *Decoder { return &Decoder{b: b} }

// Err returns the first error met, if any.
func (d *Decoder) Err() error { return d.err }

// Remaining returns the number of unread bytes.
func (d *Decoder) Remaining() int { return len(d.b) - d.off }

// Fail records err unless an error is already recorded, and stops
// further reads.
func (d *Decoder) Fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.off = len(d.b)
}

func (d *Decoder) short() {
	if d.err == nil {
		d.err = ErrTruncated
	}
	d.off = len(d.b)
}

// U8 reads one byte.
func (d *Decoder) U8() uint8 {
	if d.off < len(d.b) {
		v := d.b[d.off]
		d.off++
		return v
	}
	d.short()
	return 0
}

// Bool reads a byte that must be 0 or 1.
func (d *Decoder) Bool(field string) bool {
	v := d.U8()
	if v > 1 {
		d.Fail(errors.New("abi: " + field + ": boolean byte " + itoa(int64(v)) + " is not 0 or 1"))
		return false
	}
	return v == 1
}

// U32 reads a little-endian uint32.
func (d *Decoder) U32() uint32 {
	if d.off <= len(d.b)-4 {
		v := binary.LittleEndian.Uint32(d.b[d.off:])
		d.off += 4
		return v
	}
	d.short()
	return 0
}

// I32 reads a little-endian int32.
func (d *Decoder) I32() int32 { return int32(d.U32()) }

// U64 reads a little-endian uint64.
func (d *Decoder) U64() uint64 {
	if d.off <= len(d.b)-8 {
		v := binary.LittleEndian.Uint64(d.b[d.off:])
		d.off += 8
		return v
	}
	d.short()
	return 0
}

// I64 reads a little-endian int64.
func (d *Decoder) I64() int64 { return int64(d.U64()) }

// F64 reads a binary64 that must be finite.
func (d *Decoder) F64(field string) float64 {
	v := math.Float64frombits(d.U64())
	if math.IsNaN(v) || math.IsInf(v, 0) {
		d.Fail(errors.New("abi: " + field + ": " + ftoa(v) + " is not a finite number"))
		return 0
	}
	return v
}

// bytesN reads a u32 length of at most max and that many bytes, aliased.
func (d *Decoder) bytesN(field string, max int) []byte {
	n := d.U32()
	if int64(n) > int64(max) {
		d.Fail(errors.New("abi: " + field + ": " + utoa(uint64(n)) + " bytes exceeds the limit of " + itoa(int64(max))))
		return nil
	}
	if int64(n) > int64(len(d.b)-d.off) {
		d.short()
		return nil
	}
	s := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return s
}

// Str reads a string of at most max bytes.
func (d *Decoder) Str(field string, max int) string {
	b := d.bytesN(field, max)
	if d.alias && len(b) > 0 {
		return unsafe.String(&b[0], len(b))
	}
	return string(b)
}

// Interned reads a string like Str but returns one shared copy for equal
// values within this decoder (tenants, samplers and compatibility keys
// repeat across jobs; fewer allocations are much faster in a guest).
func (d *Decoder) Interned(field string, max int) string {
	b := d.bytesN(field, max)
	if len(b) == 0 {
		return ""
	}
	if d.alias {
		return unsafe.String(&b[0], len(b))
	}
	if s, ok := d.intern[string(b)]; ok {
		return s
	}
	if d.intern == nil {
		d.intern = make(map[string]string, 8)
	}
	s := string(b)
	d.intern[s] = s
	return s
}

// Blob reads a byte string of at most max bytes. The result aliases the
// decoder's input; copy it to keep it beyond the input's lifetime.
func (d *Decoder) Blob(field string, max int) []byte {
	return d.bytesN(field, max)
}

// Count reads a list length of at most max items, each at least minItem
// bytes long, so that a corrupt count cannot make the reader allocate
// more than the message could hold.
func (d *Decoder) Count(field string, max, minItem int) int {
	n := d.U32()
	if d.err != nil {
		return 0
	}
	if int64(n) > int64(max) {
		d.Fail(errors.New("abi: " + field + ": " + utoa(uint64(n)) + " items exceeds the limit of " + itoa(int64(max))))
		return 0
	}
	if minItem > 0 && int64(n)*int64(minItem) > int64(d.Remaining()) {
		d.short()
		return 0
	}
	return int(n)
}

// End records an error if bytes remain unread.
func (d *Decoder) End(what string) {
	if d.err == nil && d.Remaining() != 0 {
		d.err = errors.New("abi: " + what + ": " + itoa(int64(d.Remaining())) + " trailing bytes")
	}
}
