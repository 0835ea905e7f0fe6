package safetensors

import (
	"testing"
)

// FuzzParseHeader feeds arbitrary bytes to the reader as a whole file: it
// must either refuse them with an error or return a File whose every tensor
// lies inside the data and can be read through the typed helpers.
// The corpus in testdata/fuzz/FuzzParseHeader runs as a regression test.
func FuzzParseHeader(f *testing.F) {
	for _, c := range malformedCases() {
		f.Add(c.data)
	}
	valid, err := EncodeHeader([]WriteTensor{
		F32Tensor("a", []int{2, 2}, []float32{1, 2, 3, 4}),
		F16Tensor("b", []int{3}, []float32{1, 2, 3}),
		I64Tensor("c", []int{1}, []int64{5}),
	}, map[string]string{"format": "pt"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(append(valid, make([]byte, 16+6+8)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := FromBytes(data)
		if err != nil {
			if file != nil {
				t.Fatal("error with a non-nil file")
			}
			return
		}
		dataLen := int64(len(data)) - file.header.DataOffset
		for _, n := range file.Names() {
			info, ok := file.Info(n)
			if !ok {
				t.Fatalf("name %q without info", n)
			}
			if info.Begin < 0 || info.End < info.Begin || info.End > dataLen {
				t.Fatalf("tensor %q at [%d, %d) outside %d bytes", n, info.Begin, info.End, dataLen)
			}
			b, err := file.Bytes(n)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) != int64(info.Numel())*int64(DTypeSize(info.DType)) {
				t.Fatalf("tensor %q: %d bytes for shape %v %s", n, len(b), info.Shape, info.DType)
			}
			switch info.DType {
			case "F32", "F16", "BF16", "F64":
				if _, _, err := Float32(file, n); err != nil {
					t.Fatal(err)
				}
			case "I64", "I32":
				if _, _, err := Int64(file, n); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}
