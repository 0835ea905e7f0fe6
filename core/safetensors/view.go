package safetensors

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// ViewEntry maps one tensor of a View to a tensor of the underlying source,
// optionally presenting it with a different shape of the same element count
// (for example a (C, C, 1, 1) convolution weight seen as a (C, C) matrix),
// or only the rows [RowStart, RowEnd) of its outermost dimension (for
// example the query third of a fused query/key/value projection).
type ViewEntry struct {
	From             string
	Shape            []int // nil keeps the source's shape (of the selected rows)
	RowStart, RowEnd int   // RowEnd 0: all rows
}

// View presents tensors of another source under new names (and, per
// tensor, a new shape over the same bytes). It implements Source and copies
// no data.
type View struct {
	src     Source
	entries map[string]ViewEntry
	names   []string
}

// NewView builds a view whose tensor name → entry map refers to tensors of
// src. Every entry must name an existing tensor, and a reshaped entry must
// keep the element count.
func NewView(src Source, entries map[string]ViewEntry) (*View, error) {
	v := &View{src: src, entries: make(map[string]ViewEntry, len(entries))}
	for name, e := range entries {
		info, ok := src.Info(e.From)
		if !ok {
			return nil, fmt.Errorf("safetensors: view: tensor %q refers to missing tensor %q", name, e.From)
		}
		numel := info.Numel()
		if e.RowEnd != 0 {
			if len(info.Shape) == 0 || e.RowStart < 0 || e.RowEnd <= e.RowStart || e.RowEnd > info.Shape[0] {
				return nil, fmt.Errorf("safetensors: view: tensor %q: rows [%d, %d) outside %q %v", name, e.RowStart, e.RowEnd, e.From, info.Shape)
			}
			rowShape := slices.Clone(info.Shape)
			rowShape[0] = e.RowEnd - e.RowStart
			numel = 1
			for _, d := range rowShape {
				numel *= d
			}
			if e.Shape == nil {
				e.Shape = rowShape
			}
		}
		if e.Shape != nil {
			n := 1
			for _, d := range e.Shape {
				if d < 0 {
					return nil, fmt.Errorf("safetensors: view: tensor %q: negative dimension in shape %v", name, e.Shape)
				}
				n *= d
			}
			if n != numel {
				return nil, fmt.Errorf("safetensors: view: tensor %q: shape %v does not hold the %d elements of %q %v", name, e.Shape, numel, e.From, info.Shape)
			}
			e.Shape = slices.Clone(e.Shape)
		}
		v.entries[name] = e
		v.names = append(v.names, name)
	}
	sort.Strings(v.names)
	return v, nil
}

// WithPrefix returns a view of the tensors of src whose names start with
// prefix, named without it (e.g. "unet." + name → name).
func WithPrefix(src Source, prefix string) *View {
	entries := map[string]ViewEntry{}
	for _, n := range src.Names() {
		if rest, ok := strings.CutPrefix(n, prefix); ok && rest != "" {
			entries[rest] = ViewEntry{From: n}
		}
	}
	v, _ := NewView(src, entries) // cannot fail: every entry exists and keeps its shape
	return v
}

// Names returns the view's tensor names in sorted order.
func (v *View) Names() []string { return append([]string(nil), v.names...) }

// Info describes the named tensor as the view presents it.
func (v *View) Info(name string) (TensorInfo, bool) {
	e, ok := v.entries[name]
	if !ok {
		return TensorInfo{}, false
	}
	info, ok := v.src.Info(e.From)
	if !ok {
		return TensorInfo{}, false
	}
	info.Name = name
	if e.RowEnd != 0 {
		rowBytes := (info.End - info.Begin) / int64(info.Shape[0])
		info.Begin, info.End = info.Begin+int64(e.RowStart)*rowBytes, info.Begin+int64(e.RowEnd)*rowBytes
	}
	if e.Shape != nil {
		info.Shape = slices.Clone(e.Shape)
	}
	return info, true
}

// Bytes returns the underlying tensor's bytes.
func (v *View) Bytes(name string) ([]byte, error) {
	e, ok := v.entries[name]
	if !ok {
		return nil, fmt.Errorf("safetensors: no tensor %q in view", name)
	}
	b, err := v.src.Bytes(e.From)
	if err != nil || e.RowEnd == 0 {
		return b, err
	}
	info, ok := v.src.Info(e.From)
	if !ok || len(info.Shape) == 0 || info.Shape[0] < e.RowEnd {
		return nil, fmt.Errorf("safetensors: view: tensor %q: source %q changed", name, e.From)
	}
	rowBytes := len(b) / info.Shape[0]
	return b[e.RowStart*rowBytes : e.RowEnd*rowBytes : e.RowEnd*rowBytes], nil
}

// Source returns the name in the underlying source that a view name refers
// to ("" and false when the view has no such tensor).
func (v *View) Source(name string) (string, bool) {
	e, ok := v.entries[name]
	return e.From, ok
}

// Memory is an in-memory Source built from WriteTensors (useful for tests
// and for tensors converted at load time).
type Memory struct {
	infos map[string]TensorInfo
	data  map[string][]byte
	names []string
}

// NewMemory validates the tensors (unique names, known dtypes, byte length
// matching shape × dtype size) and returns them as a Source. The data is
// not copied.
func NewMemory(tensors []WriteTensor) (*Memory, error) {
	if _, err := EncodeHeader(tensors, nil); err != nil {
		return nil, err
	}
	m := &Memory{infos: map[string]TensorInfo{}, data: map[string][]byte{}}
	var off int64
	for _, t := range tensors {
		m.infos[t.Name] = TensorInfo{Name: t.Name, DType: t.DType, Shape: slices.Clone(t.Shape), Begin: off, End: off + int64(len(t.Data))}
		off += int64(len(t.Data))
		m.data[t.Name] = t.Data
		m.names = append(m.names, t.Name)
	}
	sort.Strings(m.names)
	return m, nil
}

// Names returns the tensor names in sorted order.
func (m *Memory) Names() []string { return append([]string(nil), m.names...) }

// Info describes the named tensor.
func (m *Memory) Info(name string) (TensorInfo, bool) {
	info, ok := m.infos[name]
	info.Shape = slices.Clone(info.Shape)
	return info, ok
}

// Bytes returns the named tensor's bytes (not copied).
func (m *Memory) Bytes(name string) ([]byte, error) {
	b, ok := m.data[name]
	if !ok {
		return nil, fmt.Errorf("safetensors: no tensor %q in memory source", name)
	}
	return b, nil
}
