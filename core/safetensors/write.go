package safetensors

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
)

// WriteTensor is one tensor to write: its name, safetensors dtype, shape and
// raw little-endian bytes (len(Data) must equal numel × dtype size).
type WriteTensor struct {
	Name  string
	DType string
	Shape []int
	Data  []byte
}

// F32Tensor builds an F32 WriteTensor from float32 values.
func F32Tensor(name string, shape []int, v []float32) WriteTensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return WriteTensor{Name: name, DType: "F32", Shape: append([]int(nil), shape...), Data: b}
}

// F16Tensor builds an F16 WriteTensor, rounding float32 values to half.
func F16Tensor(name string, shape []int, v []float32) WriteTensor {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], Float32ToFloat16(x))
	}
	return WriteTensor{Name: name, DType: "F16", Shape: append([]int(nil), shape...), Data: b}
}

// BF16Tensor builds a BF16 WriteTensor, rounding float32 values to bfloat16.
func BF16Tensor(name string, shape []int, v []float32) WriteTensor {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], Float32ToBFloat16(x))
	}
	return WriteTensor{Name: name, DType: "BF16", Shape: append([]int(nil), shape...), Data: b}
}

// I64Tensor builds an I64 WriteTensor from int64 values.
func I64Tensor(name string, shape []int, v []int64) WriteTensor {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return WriteTensor{Name: name, DType: "I64", Shape: append([]int(nil), shape...), Data: b}
}

// FromSource builds a WriteTensor that copies nothing: its Data is the
// source's view of the named tensor, stored under newName.
func FromSource(src Source, name, newName string) (WriteTensor, error) {
	info, ok := src.Info(name)
	if !ok {
		return WriteTensor{}, fmt.Errorf("safetensors: no tensor %q", name)
	}
	b, err := src.Bytes(name)
	if err != nil {
		return WriteTensor{}, err
	}
	return WriteTensor{Name: newName, DType: info.DType, Shape: info.Shape, Data: b}, nil
}

type headerEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// EncodeHeader validates the tensors and returns the full header block
// (8-byte length + JSON padded with spaces to a multiple of 8 bytes) for
// them in the given order.
func EncodeHeader(tensors []WriteTensor, metadata map[string]string) ([]byte, error) {
	hdr := make(map[string]any, len(tensors)+1)
	if len(metadata) > 0 {
		hdr["__metadata__"] = metadata
	}
	var off int64
	for _, t := range tensors {
		if t.Name == "" || t.Name == "__metadata__" {
			return nil, fmt.Errorf("safetensors: write: invalid tensor name %q", t.Name)
		}
		if _, dup := hdr[t.Name]; dup {
			return nil, fmt.Errorf("safetensors: write: duplicate tensor name %q", t.Name)
		}
		size := DTypeSize(t.DType)
		if size == 0 {
			return nil, fmt.Errorf("safetensors: write %q: unknown dtype %q", t.Name, t.DType)
		}
		n := 1
		for _, d := range t.Shape {
			if d < 0 {
				return nil, fmt.Errorf("safetensors: write %q: negative dimension in shape %v", t.Name, t.Shape)
			}
			n *= d
		}
		if n*size != len(t.Data) {
			return nil, fmt.Errorf("safetensors: write %q: shape %v of %s needs %d bytes, have %d", t.Name, t.Shape, t.DType, n*size, len(t.Data))
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		hdr[t.Name] = headerEntry{DType: t.DType, Shape: shape, DataOffsets: [2]int64{off, off + int64(len(t.Data))}}
		off += int64(len(t.Data))
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		return nil, fmt.Errorf("safetensors: write: encode header: %w", err)
	}
	for (8+len(js))%8 != 0 {
		js = append(js, ' ')
	}
	if len(js) > MaxHeaderSize {
		return nil, fmt.Errorf("safetensors: write: header of %d bytes exceeds the %d-byte limit", len(js), MaxHeaderSize)
	}
	out := make([]byte, 8, 8+len(js))
	binary.LittleEndian.PutUint64(out, uint64(len(js)))
	return append(out, js...), nil
}

// Write encodes the tensors, in the given order, as a safetensors stream.
func Write(w io.Writer, tensors []WriteTensor, metadata map[string]string) error {
	hdr, err := EncodeHeader(tensors, metadata)
	if err != nil {
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("safetensors: write header: %w", err)
	}
	for _, t := range tensors {
		if _, err := w.Write(t.Data); err != nil {
			return fmt.Errorf("safetensors: write %q: %w", t.Name, err)
		}
	}
	return nil
}

// WriteFile writes the tensors to path as a safetensors file, atomically:
// the data goes to a temporary file in the same folder that is renamed over
// path once complete. Tensors are stored in name order.
func WriteFile(path string, tensors []WriteTensor, metadata map[string]string) error {
	sorted := append([]WriteTensor(nil), tensors...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	if _, err := EncodeHeader(sorted, metadata); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	fail := func(err error) error {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := Write(bw, sorted, metadata); err != nil {
		return fail(err)
	}
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	return nil
}
