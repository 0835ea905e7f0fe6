// Package safetensors reads and writes the safetensors tensor file format:
// an 8-byte little-endian header length, a JSON header naming each tensor's
// dtype, shape and byte range, then the raw little-endian tensor data.
// Files are memory-mapped and tensors are handed out as views into the map.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"slices"
	"sort"
)

// MaxHeaderSize is the largest JSON header accepted (100 MB), as in the
// reference implementation; larger headers are refused before parsing.
const MaxHeaderSize = 100_000_000

// TensorInfo describes one tensor of a file: its dtype, its shape and its
// byte range [Begin, End) relative to the start of the data section.
type TensorInfo struct {
	Name  string
	DType string // "F32", "F16", "BF16", "I64", "I32", ...
	Shape []int
	Begin int64
	End   int64
}

// Numel returns the number of elements the tensor holds.
func (ti TensorInfo) Numel() int {
	n := 1
	for _, d := range ti.Shape {
		n *= d
	}
	return n
}

// Source is any named set of tensors: one file, a sharded set, or a
// renamed/prefixed view of another source.
type Source interface {
	// Names returns the tensor names in sorted order.
	Names() []string
	// Info describes the named tensor; false when there is no such tensor.
	Info(name string) (TensorInfo, bool)
	// Bytes returns the raw little-endian bytes of the named tensor. For
	// files this is a read-only view into the memory map: never write to it,
	// and do not use it after the source is closed.
	Bytes(name string) ([]byte, error)
}

// DTypeSize returns the size in bytes of one element of the named
// safetensors dtype, or 0 for an unknown dtype.
func DTypeSize(dtype string) int {
	switch dtype {
	case "F64", "I64", "U64":
		return 8
	case "F32", "I32", "U32":
		return 4
	case "F16", "BF16", "I16", "U16":
		return 2
	case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2":
		return 1
	}
	return 0
}

// Header is the parsed and validated header of a safetensors file.
type Header struct {
	// Tensors holds every tensor, sorted by name.
	Tensors []TensorInfo
	// Metadata is the free-form __metadata__ string map (nil when absent).
	Metadata map[string]string
	// DataOffset is the file offset of the data section (8 + header length).
	DataOffset int64
}

// ParseHeader parses and validates the header at the start of a safetensors
// file of fileSize bytes; prefix must hold at least the first 8 bytes and,
// for success, the whole header. It checks everything that can be checked
// without reading tensor data: header length within the file and under
// MaxHeaderSize, valid JSON, known dtypes, unique names, shapes whose size
// matches the byte range, ranges inside the data section and not
// overlapping, and string-only __metadata__. Unreferenced bytes between
// tensors are tolerated (the reference writer never leaves any).
func ParseHeader(prefix []byte, fileSize int64) (*Header, error) {
	if fileSize < 8 || len(prefix) < 8 {
		return nil, fmt.Errorf("safetensors: file of %d bytes is too short for the 8-byte header length", fileSize)
	}
	n := binary.LittleEndian.Uint64(prefix[:8])
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("safetensors: header length %d exceeds the %d-byte limit", n, MaxHeaderSize)
	}
	if n > uint64(fileSize-8) {
		return nil, fmt.Errorf("safetensors: header length %d runs beyond the end of the file (%d bytes after the length field)", n, fileSize-8)
	}
	if uint64(len(prefix)-8) < n {
		return nil, fmt.Errorf("safetensors: header truncated: have %d of %d bytes", len(prefix)-8, n)
	}
	dataOffset := int64(8 + n)
	h, err := parseHeaderJSON(prefix[8:8+n], fileSize-dataOffset)
	if err != nil {
		return nil, err
	}
	h.DataOffset = dataOffset
	return h, nil
}

// rawEntry is one tensor entry as it appears in the JSON header.
type rawEntry struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

func parseHeaderJSON(js []byte, dataLen int64) (*Header, error) {
	trimmed := bytes.TrimLeft(js, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, errors.New("safetensors: header is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("safetensors: header JSON: %w", err)
	}
	h := &Header{}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("safetensors: header JSON: %w", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("safetensors: header JSON: unexpected token %v", tok)
		}
		if seen[name] {
			return nil, fmt.Errorf("safetensors: duplicate tensor name %q in header", name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("safetensors: header JSON at %q: %w", name, err)
		}
		if name == "__metadata__" {
			md, err := parseMetadata(raw)
			if err != nil {
				return nil, err
			}
			h.Metadata = md
			continue
		}
		ti, err := parseEntry(name, raw, dataLen)
		if err != nil {
			return nil, err
		}
		h.Tensors = append(h.Tensors, ti)
	}
	if _, err := dec.Token(); err != nil { // closing brace
		return nil, fmt.Errorf("safetensors: header JSON: %w", err)
	}
	// Only whitespace padding may follow the object.
	tail := js[dec.InputOffset():]
	if len(bytes.Trim(tail, " \t\r\n\x00")) != 0 {
		return nil, errors.New("safetensors: header JSON: trailing data after the header object")
	}
	if err := checkOverlap(h.Tensors); err != nil {
		return nil, err
	}
	sort.Slice(h.Tensors, func(i, j int) bool { return h.Tensors[i].Name < h.Tensors[j].Name })
	return h, nil
}

func parseMetadata(raw json.RawMessage) (map[string]string, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, errors.New("safetensors: __metadata__ must be a JSON object of strings")
	}
	md := make(map[string]string, len(m))
	for k, v := range m {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("safetensors: __metadata__ value of %q is not a string", k)
		}
		md[k] = s
	}
	return md, nil
}

func parseEntry(name string, raw json.RawMessage, dataLen int64) (TensorInfo, error) {
	if name == "" {
		return TensorInfo{}, errors.New("safetensors: tensor with an empty name in header")
	}
	var e rawEntry
	if err := json.Unmarshal(raw, &e); err != nil {
		return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: malformed entry: %w", name, err)
	}
	if e.DType == nil || e.Shape == nil || e.DataOffsets == nil {
		return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: entry needs dtype, shape and data_offsets", name)
	}
	size := DTypeSize(*e.DType)
	if size == 0 {
		return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: unknown dtype %q", name, *e.DType)
	}
	offs := *e.DataOffsets
	if len(offs) != 2 {
		return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: data_offsets must hold 2 numbers, has %d", name, len(offs))
	}
	begin, end := offs[0], offs[1]
	if begin < 0 || end < begin {
		return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: invalid data_offsets [%d, %d]", name, begin, end)
	}
	if end > dataLen {
		return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: data_offsets [%d, %d] out of bounds of the %d-byte data section", name, begin, end, dataLen)
	}
	if len(*e.Shape) > 64 {
		return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: %d dimensions is too many", name, len(*e.Shape))
	}
	shape := make([]int, len(*e.Shape))
	zero := false
	for i, d := range *e.Shape {
		if d < 0 {
			return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: negative dimension %d in shape", name, d)
		}
		shape[i] = int(d)
		zero = zero || d == 0
	}
	numel := uint64(0)
	if !zero {
		numel = 1
		for _, d := range shape {
			hi, lo := bits.Mul64(numel, uint64(d))
			if hi != 0 || lo > 1<<56 {
				return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: shape %v is too large", name, shape)
			}
			numel = lo
		}
	}
	if want := numel * uint64(size); want != uint64(end-begin) {
		return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: shape %v of %s needs %d bytes, data_offsets give %d", name, shape, *e.DType, want, end-begin)
	}
	return TensorInfo{Name: name, DType: *e.DType, Shape: shape, Begin: begin, End: end}, nil
}

// checkOverlap reports the first pair of tensors whose byte ranges overlap.
func checkOverlap(ts []TensorInfo) error {
	idx := make([]int, len(ts))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		if ts[a].Begin != ts[b].Begin {
			return compare(ts[a].Begin, ts[b].Begin)
		}
		return compare(ts[a].End, ts[b].End)
	})
	var prev *TensorInfo
	for _, i := range idx {
		t := &ts[i]
		if t.Begin == t.End {
			continue // empty tensors occupy no bytes
		}
		if prev != nil && t.Begin < prev.End {
			return fmt.Errorf("safetensors: tensors %q [%d, %d) and %q [%d, %d) overlap", prev.Name, prev.Begin, prev.End, t.Name, t.Begin, t.End)
		}
		prev = t
	}
	return nil
}

func compare(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// File is an open, memory-mapped safetensors file. It implements Source.
// Its methods are safe for concurrent use until Close.
type File struct {
	path   string
	data   []byte // the whole mapped file
	mapped bool   // data came from mmap and must be unmapped
	header *Header
	index  map[string]int
}

// Open memory-maps and validates the safetensors file at path.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: open: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("safetensors: %s is not a regular file", path)
	}
	size := st.Size()
	if size < 8 {
		return nil, fmt.Errorf("safetensors: %s: file of %d bytes is too short for the 8-byte header length", path, size)
	}
	data, mapped, err := mapFile(f, size)
	if err != nil {
		return nil, fmt.Errorf("safetensors: map %s: %w", path, err)
	}
	h, err := ParseHeader(data, size)
	if err != nil {
		if mapped {
			_ = unmapFile(data)
		}
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return newFile(path, data, mapped, h), nil
}

// FromBytes validates an in-memory safetensors image and returns a File
// over it (no memory map; Close is a no-op apart from releasing data).
func FromBytes(data []byte) (*File, error) {
	h, err := ParseHeader(data, int64(len(data)))
	if err != nil {
		return nil, err
	}
	return newFile("", data, false, h), nil
}

func newFile(path string, data []byte, mapped bool, h *Header) *File {
	idx := make(map[string]int, len(h.Tensors))
	for i, t := range h.Tensors {
		idx[t.Name] = i
	}
	return &File{path: path, data: data, mapped: mapped, header: h, index: idx}
}

// Path returns the path the file was opened from ("" for FromBytes).
func (f *File) Path() string { return f.path }

// Names returns every tensor name in sorted order.
func (f *File) Names() []string {
	names := make([]string, len(f.header.Tensors))
	for i, t := range f.header.Tensors {
		names[i] = t.Name
	}
	return names
}

// Info describes the named tensor.
func (f *File) Info(name string) (TensorInfo, bool) {
	i, ok := f.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	t := f.header.Tensors[i]
	t.Shape = slices.Clone(t.Shape)
	return t, true
}

// Bytes returns a read-only view of the named tensor's bytes in the map.
func (f *File) Bytes(name string) ([]byte, error) {
	i, ok := f.index[name]
	if !ok {
		return nil, fmt.Errorf("safetensors: no tensor %q in %s", name, f.describe())
	}
	if f.data == nil {
		return nil, fmt.Errorf("safetensors: tensor %q: %s is closed", name, f.describe())
	}
	t := f.header.Tensors[i]
	off := f.header.DataOffset
	return f.data[off+t.Begin : off+t.End : off+t.End], nil
}

// Metadata returns a copy of the file's __metadata__ map (nil when absent).
func (f *File) Metadata() map[string]string {
	if f.header.Metadata == nil {
		return nil
	}
	m := make(map[string]string, len(f.header.Metadata))
	for k, v := range f.header.Metadata {
		m[k] = v
	}
	return m
}

// Close unmaps the file. Views returned by Bytes or Float32 must not be used
// afterwards.
func (f *File) Close() error {
	if f.data == nil {
		return nil
	}
	data := f.data
	f.data = nil
	if f.mapped {
		if err := unmapFile(data); err != nil {
			return fmt.Errorf("safetensors: unmap %s: %w", f.path, err)
		}
	}
	return nil
}

func (f *File) describe() string {
	if f.path == "" {
		return "in-memory safetensors"
	}
	return f.path
}
