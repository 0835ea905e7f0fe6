// Package qitest reads the tiny Qwen-Image parity fixtures in
// core/model/qwenimage/testdata (made by testdata/make_fixtures.py with
// diffusers and transformers) for the tests of the packages that make up
// the family: tokenizer, text encoder, transformer, VAE, sampler.
package qitest

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
)

// Dir returns the fixture folder.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata")
}

// Refs opens refs.safetensors (float32 references); the test fails when
// it is missing (the fixtures are committed).
func Refs(t testing.TB) *safetensors.File {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(Dir(), "refs.safetensors"))
	if err != nil {
		t.Fatalf("open fixtures: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// Tensor returns a reference tensor and its shape.
func Tensor(t testing.TB, f *safetensors.File, name string) ([]float32, []int) {
	t.Helper()
	v, shape, err := safetensors.Float32(f, name)
	if err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	return v, shape
}

// Meta decodes meta.json into v.
func Meta(t testing.TB, v any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(Dir(), "meta.json"))
	if err != nil {
		t.Fatalf("read meta.json: %v", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("meta.json: %v", err)
	}
}

// RelErr returns max|got − want| / max|want|.
func RelErr(got, want []float32) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var d, m float64
	for i := range want {
		d = max(d, math.Abs(float64(got[i])-float64(want[i])))
		m = max(m, math.Abs(float64(want[i])))
	}
	if m == 0 {
		return d
	}
	return d / m
}

// Check fails t when got differs from want by more than tol (RelErr) and
// logs the error otherwise.
func Check(t testing.TB, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	e := RelErr(got, want)
	if e > tol || math.IsNaN(e) {
		t.Errorf("%s: relative error %.3g > %.0g", what, e, tol)
		return
	}
	t.Logf("%s: relative error %.3g", what, e)
}
