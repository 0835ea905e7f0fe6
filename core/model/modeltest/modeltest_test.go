package modeltest

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
)

func TestRandomSource(t *testing.T) {
	infos := []safetensors.TensorInfo{
		{Name: "a.weight", Shape: []int{64, 16, 3, 3}},
		{Name: "a.bias", Shape: []int{64}},
		{Name: "norm.weight", Shape: []int{300000}},
	}
	r, err := NewRandom(infos, 7, "F32")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Names(); len(got) != 3 || got[0] != "a.bias" {
		t.Fatalf("names %v", got)
	}
	w, shape, err := safetensors.Float32(r, "a.weight")
	if err != nil || len(w) != 64*16*9 || len(shape) != 4 {
		t.Fatalf("a.weight: %v %v", shape, err)
	}
	bound := float32(1 / 12.0) // 1/√(16·9)
	var lo, hi float32
	for _, v := range w {
		lo, hi = min(lo, v), max(hi, v)
	}
	if lo < -bound || hi > bound || hi-lo < bound {
		t.Fatalf("a.weight spans [%v, %v], want most of ±%v", lo, hi, bound)
	}
	n, _, _ := safetensors.Float32(r, "norm.weight")
	for _, v := range n {
		if v < 0.9 || v > 1.1 {
			t.Fatalf("norm scale %v outside 1 ± 0.1", v)
		}
	}
	// Deterministic per seed and name; different across seeds.
	b1, _ := r.Bytes("norm.weight")
	b2, _ := r.Bytes("norm.weight")
	r2, _ := NewRandom(infos, 8, "F32")
	b3, _ := r2.Bytes("norm.weight")
	if !bytes.Equal(b1, b2) || bytes.Equal(b1, b3) {
		t.Fatal("generation is not deterministic per seed")
	}
	h, _ := NewRandom(infos, 7, "F16")
	if in, _ := h.Info("a.weight"); in.DType != "F16" || in.End-in.Begin != 2*64*16*9 {
		t.Fatalf("F16 info %+v", in)
	}
	if _, err := NewRandom(infos, 1, "I64"); err == nil {
		t.Fatal("I64 accepted")
	}
	if _, err := r.Bytes("missing"); err == nil {
		t.Fatal("missing tensor returned bytes")
	}
}

func TestConfigsAreJSON(t *testing.T) {
	for _, b := range [][]byte{SD15UNetConfig(), SD21UNetConfig(), SDVAEConfig()} {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
	}
}
