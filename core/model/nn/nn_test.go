package nn

import (
	"slices"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/safetensors"
)

func memory(t *testing.T, ts ...safetensors.WriteTensor) *safetensors.Memory {
	t.Helper()
	m, err := safetensors.NewMemory(ts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func declare() *Weights {
	ws := NewWeights()
	NewLinear(ws.Sub("block"), "proj", 3, 2, true)
	w := ws.Sub("attn").Get("q.weight", 2, 2)
	w.Legacy = []string{"attn.query.weight"}
	w.AllowTrailingOnes = true
	return ws
}

func TestWeightsCheckAndLoad(t *testing.T) {
	f := func(name string, shape []int) safetensors.WriteTensor {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(i)
		}
		return safetensors.F32Tensor(name, shape, v)
	}
	good := []safetensors.WriteTensor{f("block.proj.weight", []int{2, 3}), f("block.proj.bias", []int{2})}
	for _, tc := range []struct {
		name  string
		extra []safetensors.WriteTensor
		want  string // "" for success
	}{
		{"current name", []safetensors.WriteTensor{f("attn.q.weight", []int{2, 2})}, ""},
		{"legacy name and conv shape", []safetensors.WriteTensor{f("attn.query.weight", []int{2, 2, 1, 1})}, ""},
		{"missing", nil, `missing tensor "attn.q.weight"`},
		{"bad trailing dims", []safetensors.WriteTensor{f("attn.q.weight", []int{2, 2, 1, 2})}, `"attn.q.weight" has shape [2 2 1 2]`},
		{"unexpected", []safetensors.WriteTensor{f("attn.q.weight", []int{2, 2}), f("attn.k.weight", []int{2, 2})}, `unexpected tensor "attn.k.weight"`},
		{"half precision", []safetensors.WriteTensor{safetensors.F16Tensor("attn.q.weight", []int{2, 2}, []float32{0, 1, 2, 3})}, ""},
		{"integer", []safetensors.WriteTensor{safetensors.I64Tensor("attn.q.weight", []int{2, 2}, []int64{1, 2, 3, 4})}, "I64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws := declare()
			be := cpu.New()
			err := ws.Load(be, memory(t, append(slices.Clone(good), tc.extra...)...))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				for _, w := range ws.List() {
					if w.T == nil || !w.T.Shape().Equal(w.Shape) {
						t.Fatalf("%s uploaded as %v", w.Name, w.T)
					}
				}
				q := ws.List()[2]
				if got := be.ToFloat32(q.T); got[3] != 3 {
					t.Fatalf("%s = %v", q.Name, got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			for _, w := range ws.List() {
				if w.T != nil {
					t.Fatalf("%s uploaded although the check failed", w.Name)
				}
			}
		})
	}
	if n := declare().Params(); n != 2*3+2+4 {
		t.Fatalf("Params() = %d", n)
	}
}

func TestDuplicateDeclarationPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	ws := NewWeights()
	ws.Get("a", 1)
	ws.Get("a", 1)
}

func TestConfigReader(t *testing.T) {
	r, err := NewConfigReader("test", []byte(`{"a": 3, "b": [1, 2], "c": null, "d": 2.0, "e": 2.5, "f": "x", "g": [1, 2, 3]}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.IntPerBlock("a", 0, 2, false); !slices.Equal(got, []int{3, 3}) {
		t.Fatalf("a: %v", got)
	}
	if got := r.IntPerBlock("b", 0, 2, false); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("b: %v", got)
	}
	if got := r.IntPerBlock("c", 7, 2, true); !slices.Equal(got, []int{7, 7}) {
		t.Fatalf("c: %v", got)
	}
	if r.Int("d", 0) != 2 || r.Int("missing", 9) != 9 || !r.Null("c") || !r.Null("missing") || r.Null("a") {
		t.Fatal("scalar reads")
	}
	if r.Err() != nil {
		t.Fatal(r.Err())
	}
	r.Int("e", 0)
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), `field "e"`) {
		t.Fatalf("non-integer: %v", err)
	}
	r, _ = NewConfigReader("test", []byte(`{"g": [1, 2, 3]}`))
	r.IntPerBlock("g", 0, 2, false)
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), "3 values") {
		t.Fatalf("wrong list length: %v", err)
	}
	r, _ = NewConfigReader("test", []byte(`{"c": null}`))
	r.Int("c", 1)
	if r.Err() == nil {
		t.Fatal("null integer accepted")
	}
	for _, bad := range []string{"", "null", "[1]", `{"a": 1} x`, `{"a": }`} {
		if _, err := NewConfigReader("test", []byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
