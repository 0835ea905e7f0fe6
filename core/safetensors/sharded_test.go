package safetensors

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeShards(t *testing.T, dir string, index string) string {
	t.Helper()
	if err := WriteFile(filepath.Join(dir, "m-00001-of-00002.safetensors"), []WriteTensor{
		F32Tensor("a.weight", []int{2}, []float32{1, 2}),
		F32Tensor("b.weight", []int{1}, []float32{3}),
	}, nil); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(filepath.Join(dir, "m-00002-of-00002.safetensors"), []WriteTensor{
		F16Tensor("c.weight", []int{2, 2}, []float32{4, 5, 6, 7}),
	}, nil); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "m.safetensors.index.json")
	if err := os.WriteFile(p, []byte(index), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenIndex(t *testing.T) {
	p := writeShards(t, t.TempDir(), `{"metadata":{"total_size":20},"weight_map":{
		"a.weight":"m-00001-of-00002.safetensors","b.weight":"m-00001-of-00002.safetensors",
		"c.weight":"m-00002-of-00002.safetensors"}}`)
	s, err := OpenIndex(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := strings.Join(s.Names(), ","); got != "a.weight,b.weight,c.weight" {
		t.Fatalf("names %s", got)
	}
	if got := s.Shards(); len(got) != 2 {
		t.Fatalf("shards %v", got)
	}
	if s.Metadata()["total_size"] != "20" {
		t.Fatalf("metadata %v", s.Metadata())
	}
	c, shape, err := Float32(s, "c.weight")
	if err != nil || len(shape) != 2 || c[3] != 7 {
		t.Fatalf("c.weight %v %v %v", c, shape, err)
	}
	a, _, err := Float32(s, "a.weight")
	if err != nil || a[1] != 2 {
		t.Fatalf("a.weight %v %v", a, err)
	}
	if _, ok := s.Info("zzz"); ok {
		t.Fatal("Info of a missing tensor")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Bytes("a.weight"); err == nil {
		t.Fatal("Bytes after Close succeeded")
	}
}

func TestOpenIndexErrors(t *testing.T) {
	cases := map[string]struct{ index, want string }{
		"bad JSON":        {`{"weight_map":`, "index"},
		"empty map":       {`{"weight_map":{}}`, "empty or missing weight_map"},
		"missing shard":   {`{"weight_map":{"a.weight":"nope.safetensors"}}`, "nope.safetensors"},
		"tensor not in":   {`{"weight_map":{"c.weight":"m-00001-of-00002.safetensors"}}`, `tensor "c.weight" is not in shard`},
		"escaping path":   {`{"weight_map":{"a.weight":"../m-00001-of-00002.safetensors"}}`, "plain file name"},
		"absolute path":   {`{"weight_map":{"a.weight":"/etc/passwd"}}`, "plain file name"},
		"non-string file": {`{"weight_map":{"a.weight":3}}`, "index"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := writeShards(t, t.TempDir(), c.index)
			s, err := OpenIndex(p)
			if err == nil {
				s.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}

func TestView(t *testing.T) {
	m, err := NewMemory([]WriteTensor{
		F32Tensor("first_stage_model.q.weight", []int{2, 2, 1, 1}, []float32{1, 2, 3, 4}),
		F32Tensor("first_stage_model.q.bias", []int{2}, []float32{5, 6}),
		F32Tensor("other.x", []int{1}, []float32{7}),
	})
	if err != nil {
		t.Fatal(err)
	}
	p := WithPrefix(m, "first_stage_model.")
	if got := strings.Join(p.Names(), ","); got != "q.bias,q.weight" {
		t.Fatalf("prefix view names %s", got)
	}
	v, err := NewView(p, map[string]ViewEntry{
		"to_q.weight": {From: "q.weight", Shape: []int{2, 2}},
		"to_q.bias":   {From: "q.bias"},
	})
	if err != nil {
		t.Fatal(err)
	}
	info, ok := v.Info("to_q.weight")
	if !ok || info.Name != "to_q.weight" || len(info.Shape) != 2 {
		t.Fatalf("info %+v", info)
	}
	w, _, err := Float32(v, "to_q.weight")
	if err != nil || w[3] != 4 {
		t.Fatalf("%v %v", w, err)
	}
	if from, ok := v.Source("to_q.bias"); !ok || from != "q.bias" {
		t.Fatalf("source %q", from)
	}
	if _, err := NewView(p, map[string]ViewEntry{"x": {From: "missing"}}); err == nil {
		t.Fatal("view of a missing tensor accepted")
	}
	if _, err := NewView(p, map[string]ViewEntry{"x": {From: "q.weight", Shape: []int{3}}}); err == nil {
		t.Fatal("reshape changing the element count accepted")
	}
	if _, err := v.Bytes("q.weight"); err == nil {
		t.Fatal("view exposes a name it does not map")
	}
}

func TestViewRows(t *testing.T) {
	m, err := NewMemory([]WriteTensor{
		F32Tensor("qkv.weight", []int{6, 2}, []float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}),
		F32Tensor("qkv.bias", []int{6}, []float32{0, 1, 2, 3, 4, 5}),
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewView(m, map[string]ViewEntry{
		"k.weight": {From: "qkv.weight", RowStart: 2, RowEnd: 4},
		"v.bias":   {From: "qkv.bias", RowStart: 4, RowEnd: 6},
		"v.flat":   {From: "qkv.weight", RowStart: 4, RowEnd: 6, Shape: []int{4}},
	})
	if err != nil {
		t.Fatal(err)
	}
	k, shape, err := Float32(v, "k.weight")
	if err != nil || fmt.Sprint(shape) != "[2 2]" || fmt.Sprint(k) != "[4 5 6 7]" {
		t.Fatalf("k.weight %v %v %v", k, shape, err)
	}
	b, shape, err := Float32(v, "v.bias")
	if err != nil || fmt.Sprint(shape) != "[2]" || fmt.Sprint(b) != "[4 5]" {
		t.Fatalf("v.bias %v %v %v", b, shape, err)
	}
	if f, _, _ := Float32(v, "v.flat"); fmt.Sprint(f) != "[8 9 10 11]" {
		t.Fatalf("v.flat %v", f)
	}
	if info, _ := v.Info("k.weight"); info.End-info.Begin != 16 {
		t.Fatalf("k.weight info %+v", info)
	}
	for _, bad := range []ViewEntry{{From: "qkv.weight", RowStart: 4, RowEnd: 7}, {From: "qkv.weight", RowStart: 3, RowEnd: 3}, {From: "qkv.weight", RowStart: 0, RowEnd: 2, Shape: []int{3}}} {
		if _, err := NewView(m, map[string]ViewEntry{"x": bad}); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}
