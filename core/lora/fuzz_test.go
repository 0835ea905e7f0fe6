package lora

import (
	"bytes"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/safetensors"
)

// encode writes src's tensors as a safetensors file.
func encode(t testing.TB, src safetensors.Source) []byte {
	var ts []safetensors.WriteTensor
	for _, n := range src.Names() {
		w, err := safetensors.FromSource(src, n, n)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, w)
	}
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, ts, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzParse feeds arbitrary files to the LoRA and embedding parsers: they
// return an error or a result whose factors fit the model, and never
// panic. The corpus is kept in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	be := cpu.New()
	m := newToy(f, be)
	f.Add(encode(f, kohyaFile(f, 1, 2, 1)))
	f.Add(encode(f, peftFile(f, 2, 3)))
	dora, _, _, _ := doraFile(f, 3, 2, 1, false)
	f.Add(encode(f, dora))
	f.Fuzz(func(t *testing.T, data []byte) {
		src, err := safetensors.FromBytes(data)
		if err != nil {
			return
		}
		if l, err := Parse(src, m.modules()); err == nil {
			for _, fs := range l.Factors {
				for _, fc := range fs {
					if fc.Rank <= 0 || len(fc.Down) != fc.Rank*fc.In() || len(fc.Up) != fc.Out*fc.Rank || (fc.Magnitude != nil && len(fc.Magnitude) != fc.Out) {
						t.Fatalf("factor %s does not fit: rank %d, %d down, %d up", fc.Module, fc.Rank, len(fc.Down), len(fc.Up))
					}
				}
			}
		}
		_, _ = ParseEmbedding(src, "fuzz", map[string]int{TextEncoder: 8, TextEncoder2: 12})
	})
}
