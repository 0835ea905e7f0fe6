package safetensors

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rawFile assembles a safetensors image from a literal header and data.
func rawFile(header string, data []byte) []byte {
	b := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

// withLength assembles an image whose length field is set explicitly.
func withLength(n uint64, rest []byte) []byte {
	b := make([]byte, 8, 8+len(rest))
	binary.LittleEndian.PutUint64(b, n)
	return append(b, rest...)
}

// malformedCases are safetensors images every reader must refuse; each
// names a substring the error must contain. They also seed the fuzzer.
func malformedCases() []struct {
	name, want string
	data       []byte
} {
	d16 := make([]byte, 16)
	return []struct {
		name, want string
		data       []byte
	}{
		{"empty file", "too short", nil},
		{"short length field", "too short", []byte{1, 2, 3}},
		{"header length beyond file", "beyond the end", withLength(1000, []byte(`{}`))},
		{"header over 100MB", "exceeds", withLength(200_000_000, []byte(`{}`))},
		{"header length huge", "exceeds", withLength(math.MaxUint64, nil)},
		{"bad JSON", "header JSON", rawFile(`{"a": {"dtype": "F32", `, d16)},
		{"not an object", "not a JSON object", rawFile(`[1,2]`, nil)},
		{"trailing garbage", "trailing data", rawFile(`{}{}`, nil)},
		{"unknown dtype", "unknown dtype", rawFile(`{"a":{"dtype":"F33","shape":[4],"data_offsets":[0,16]}}`, d16)},
		{"missing fields", "needs dtype, shape and data_offsets", rawFile(`{"a":{"dtype":"F32","shape":[4]}}`, d16)},
		{"offsets out of bounds", "out of bounds", rawFile(`{"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}`, d16)},
		{"offsets reversed", "invalid data_offsets", rawFile(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}`, d16)},
		{"negative offset", "invalid data_offsets", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, d16)},
		{"three offsets", "must hold 2", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, d16)},
		{"overlapping", "overlap", rawFile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, d16)},
		{"size mismatch", "needs 12 bytes", rawFile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}`, d16)},
		{"size mismatch f16", "needs 8 bytes", rawFile(`{"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,16]}}`, d16)},
		{"negative dim", "negative dimension", rawFile(`{"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}`, d16)},
		{"fractional dim", "malformed entry", rawFile(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,16]}}`, d16)},
		{"overflowing shape", "too large", rawFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}`, d16)},
		{"duplicate names", "duplicate tensor name", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, d16)},
		{"metadata not strings", "not a string", rawFile(`{"__metadata__":{"format":"pt","n":3}}`, nil)},
		{"metadata not object", "__metadata__ must be", rawFile(`{"__metadata__":[1]}`, nil)},
		{"entry not object", "malformed entry", rawFile(`{"a":[1,2]}`, nil)},
		{"empty name", "empty name", rawFile(`{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, d16)},
	}
}

func TestMalformedRejected(t *testing.T) {
	dir := t.TempDir()
	for i, c := range malformedCases() {
		t.Run(c.name, func(t *testing.T) {
			if _, err := FromBytes(c.data); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("FromBytes: error %v, want one containing %q", err, c.want)
			}
			p := filepath.Join(dir, string(rune('a'+i))+".safetensors")
			if err := os.WriteFile(p, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := Open(p)
			if err == nil {
				f.Close()
				t.Fatal("Open accepted a malformed file")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Open: error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestValidEdgeCases(t *testing.T) {
	d16 := make([]byte, 16)
	ok := []struct {
		name string
		data []byte
	}{
		{"empty header", rawFile(`{}`, nil)},
		{"padded header", rawFile(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}    `, d16)},
		{"scalar", rawFile(`{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}`, d16)},
		{"zero-size tensors share offsets", rawFile(`{"a":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},"b":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, d16)},
		{"metadata", rawFile(`{"__metadata__":{"format":"pt"},"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]}}`, d16)},
	}
	for _, c := range ok {
		t.Run(c.name, func(t *testing.T) {
			f, err := FromBytes(c.data)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range f.Names() {
				if _, err := f.Bytes(n); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestWriteRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.safetensors")
	f32 := []float32{1, -2.5, 3.25, float32(math.Inf(1)), 0, 1e-30}
	tensors := []WriteTensor{
		F32Tensor("w", []int{2, 3}, f32),
		F16Tensor("h", []int{6}, f32),
		BF16Tensor("b", []int{3, 2}, f32),
		I64Tensor("ids", []int{2, 2}, []int64{49406, -1, 0, 1 << 40}),
		F32Tensor("scalar", []int{}, []float32{7}),
		F32Tensor("empty", []int{0, 4}, nil),
		{Name: "i32", DType: "I32", Shape: []int{2}, Data: []byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}},
	}
	md := map[string]string{"format": "pt", "note": "round trip"}
	if err := WriteFile(p, tensors, md); err != nil {
		t.Fatal(err)
	}
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := f.Metadata(); got["format"] != "pt" || got["note"] != "round trip" || len(got) != 2 {
		t.Fatalf("metadata %v", got)
	}
	if f.header.DataOffset%8 != 0 {
		t.Fatalf("data section at %d is not 8-byte aligned", f.header.DataOffset)
	}
	want := []string{"b", "empty", "h", "i32", "ids", "scalar", "w"}
	if got := f.Names(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("names %v", got)
	}
	for _, wt := range tensors {
		info, ok := f.Info(wt.Name)
		if !ok || info.DType != wt.DType || len(info.Shape) != len(wt.Shape) {
			t.Fatalf("%s: info %+v", wt.Name, info)
		}
		b, err := f.Bytes(wt.Name)
		if err != nil || !bytes.Equal(b, wt.Data) {
			t.Fatalf("%s: bytes differ (%v)", wt.Name, err)
		}
	}
	got, shape, err := Float32(f, "w")
	if err != nil || len(shape) != 2 || shape[1] != 3 {
		t.Fatal(err, shape)
	}
	for i := range f32 {
		if got[i] != f32[i] {
			t.Fatalf("w[%d] = %v, want %v", i, got[i], f32[i])
		}
	}
	h, _, err := Float32(f, "h")
	if err != nil {
		t.Fatal(err)
	}
	wantH := []float32{1, -2.5, 3.25, float32(math.Inf(1)), 0, 0}
	for i := range wantH {
		if h[i] != wantH[i] {
			t.Fatalf("h[%d] = %v, want %v", i, h[i], wantH[i])
		}
	}
	bf, _, err := Float32(f, "b")
	if err != nil || bf[0] != 1 || bf[1] != -2.5 || bf[2] != 3.25 || !math.IsInf(float64(bf[3]), 1) {
		t.Fatalf("bf16 %v %v", bf, err)
	}
	if math.Abs(float64(bf[5])-1e-30)/1e-30 > 1.0/128 {
		t.Fatalf("bf16 1e-30 → %v", bf[5])
	}
	ids, _, err := Int64(f, "ids")
	if err != nil || ids[0] != 49406 || ids[1] != -1 || ids[3] != 1<<40 {
		t.Fatalf("ids %v %v", ids, err)
	}
	i32, _, err := Int64(f, "i32")
	if err != nil || i32[0] != 1 || i32[1] != -1 {
		t.Fatalf("i32 %v %v", i32, err)
	}
	if e, _, err := Float32(f, "empty"); err != nil || len(e) != 0 {
		t.Fatalf("empty %v %v", e, err)
	}
	if _, _, err := Float32(f, "ids"); err == nil {
		t.Fatal("Float32 of an I64 tensor succeeded")
	}
	if _, _, err := Int64(f, "w"); err == nil {
		t.Fatal("Int64 of an F32 tensor succeeded")
	}
	if _, _, err := Float32(f, "nope"); err == nil {
		t.Fatal("Float32 of a missing tensor succeeded")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Bytes("w"); err == nil {
		t.Fatal("Bytes after Close succeeded")
	}
}

func TestWriteRejectsBadTensors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.safetensors")
	cases := map[string][]WriteTensor{
		"duplicate":     {F32Tensor("a", []int{1}, []float32{1}), F32Tensor("a", []int{1}, []float32{2})},
		"unknown dtype": {{Name: "a", DType: "F12", Shape: []int{1}, Data: []byte{0}}},
		"size mismatch": {{Name: "a", DType: "F32", Shape: []int{2}, Data: []byte{0, 0, 0, 0}}},
		"empty name":    {F32Tensor("", []int{1}, []float32{1})},
		"metadata name": {F32Tensor("__metadata__", []int{1}, []float32{1})},
	}
	for name, ts := range cases {
		if err := WriteFile(p, ts, nil); err == nil {
			t.Errorf("%s: WriteFile accepted it", name)
		}
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("a refused write left %s behind", p)
	}
}
