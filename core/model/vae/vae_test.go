package vae

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

func fixtureConfig(t testing.TB) (Config, string) {
	t.Helper()
	dir := fixtures.Require(t, "sd15-tiny/model/vae")
	js, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(js)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, filepath.Join(dir, "diffusion_pytorch_model.safetensors")
}

// loadFixture opens the sd15-tiny VAE and the reference tensors.
func loadFixture(t testing.TB) (*Model, *safetensors.File) {
	t.Helper()
	cfg, path := fixtureConfig(t)
	refPath := fixtures.Require(t, "sd15-tiny/reference.safetensors")
	w, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	m, err := New(cpu.New(), cfg, w)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := safetensors.Open(refPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ref.Close() })
	return m, ref
}

func refTensor(t testing.TB, ref safetensors.Source, name string) ([]float32, [4]int) {
	t.Helper()
	v, shape, err := safetensors.Float32(ref, name)
	if err != nil {
		t.Fatalf("reference %s: %v", name, err)
	}
	if len(shape) != 4 {
		t.Fatalf("reference %s: shape %v is not 4-D", name, shape)
	}
	return v, [4]int{shape[0], shape[1], shape[2], shape[3]}
}

func checkClose(t *testing.T, what string, got []float32, gotShape [4]int, want []float32, wantShape [4]int, tol float64) {
	t.Helper()
	if gotShape != wantShape {
		t.Fatalf("%s: shape %v, want %v", what, gotShape, wantShape)
	}
	if e := fixtures.RelErr(got, want); e > tol {
		t.Fatalf("%s: relative error %.3g > %g", what, e, tol)
	} else {
		t.Logf("%s: relative error %.3g", what, e)
	}
}

func TestFixtureDecode(t *testing.T) {
	m, ref := loadFixture(t)
	if m.Factor() != 4 {
		t.Fatalf("Factor() = %d, want 4", m.Factor())
	}
	z, zs := refTensor(t, ref, "vae/dec_in")
	want, ws := refTensor(t, ref, "vae/dec_out")
	got, gs, err := m.Decode(context.Background(), z, zs)
	if err != nil {
		t.Fatal(err)
	}
	checkClose(t, "decode", got, gs, want, ws, 1e-4)
}

func TestFixtureEncode(t *testing.T) {
	m, ref := loadFixture(t)
	img, is := refTensor(t, ref, "vae/enc_in")
	wantMean, ms := refTensor(t, ref, "vae/enc_mean")
	wantLogvar, _ := refTensor(t, ref, "vae/enc_logvar")
	mean, logvar, ls, err := m.Encode(context.Background(), img, is)
	if err != nil {
		t.Fatal(err)
	}
	checkClose(t, "mean", mean, ls, wantMean, ms, 1e-4)
	checkClose(t, "logvar", logvar, ls, wantLogvar, ms, 1e-4)
}

func TestFixtureDecodeTiled(t *testing.T) {
	m, ref := loadFixture(t)
	z, zs := refTensor(t, ref, "vae/dec_in")
	want, ws := refTensor(t, ref, "vae/dec_out")
	got, gs, tiles, err := m.decodeTiled(context.Background(), z, zs, TileOptions{Tile: 8})
	if err != nil {
		t.Fatal(err)
	}
	if tiles < 4 {
		t.Fatalf("smallest layer split into %d tiles, want ≥ 4", tiles)
	}
	checkClose(t, "tiled decode vs reference", got, gs, want, ws, 1e-4)
}

// TestDecodeTiledMatchesDecode decodes a batch of two 24×24 latents (a
// 96×96 image) with 16-pixel tiles: every tiled layer has at least 4 tiles,
// most of them 9 to 36 including partial ones at the right and bottom.
func TestDecodeTiledMatchesDecode(t *testing.T) {
	m, _ := loadFixture(t)
	shape := [4]int{2, 4, 24, 24}
	z := make([]float32, 2*4*24*24)
	for i := range z {
		z[i] = float32(math.Sin(float64(i)*0.37) + 0.5*math.Cos(float64(i)*0.011))
	}
	want, ws, err := m.Decode(context.Background(), z, shape)
	if err != nil {
		t.Fatal(err)
	}
	got, gs, tiles, err := m.decodeTiled(context.Background(), z, shape, TileOptions{Tile: 16})
	if err != nil {
		t.Fatal(err)
	}
	if tiles < 4 {
		t.Fatalf("smallest layer split into %d tiles, want ≥ 4", tiles)
	}
	checkClose(t, "tiled vs untiled", got, gs, want, ws, 1e-3)
}

func TestFixtureEncodeTiled(t *testing.T) {
	m, ref := loadFixture(t)
	x, xs := refTensor(t, ref, "vae/enc_in")
	wantMean, ms := refTensor(t, ref, "vae/enc_mean")
	wantLogvar, _ := refTensor(t, ref, "vae/enc_logvar")
	mean, logvar, ls, tiles, err := m.encodeTiled(context.Background(), x, xs, TileOptions{Tile: 8})
	if err != nil {
		t.Fatal(err)
	}
	if tiles < 4 {
		t.Fatalf("smallest layer split into %d tiles, want ≥ 4", tiles)
	}
	checkClose(t, "tiled mean vs reference", mean, ls, wantMean, ms, 1e-4)
	checkClose(t, "tiled logvar vs reference", logvar, ls, wantLogvar, ms, 1e-4)
}

// TestEncodeTiledMatchesEncode encodes a batch of two smooth 96×72 images
// with 16-pixel tiles (partial tiles at the right and bottom, the stride-2
// downsamplers split too; every tiled layer has at least 4 tiles): mean and
// log-variance within 1e-4 of the whole-image encode (the same arithmetic,
// summed in another order), so there is no seam to blend.
func TestEncodeTiledMatchesEncode(t *testing.T) {
	m, _ := loadFixture(t)
	shape := [4]int{2, 3, 72, 96}
	img := make([]float32, 2*3*72*96)
	for i := range img {
		b, c, y, x := i/(3*72*96), i/(72*96)%3, i/96%72, i%96
		img[i] = float32(0.8 * math.Sin(float64(x)*0.05+float64(c)+float64(b)) * math.Cos(float64(y)*0.04))
	}
	wm, wl, ws, err := m.Encode(context.Background(), img, shape)
	if err != nil {
		t.Fatal(err)
	}
	gm, gl, gs, tiles, err := m.encodeTiled(context.Background(), img, shape, TileOptions{Tile: 16})
	if err != nil {
		t.Fatal(err)
	}
	if tiles < 4 {
		t.Fatalf("smallest layer split into %d tiles, want ≥ 4", tiles)
	}
	checkClose(t, "tiled vs untiled mean", gm, gs, wm, ws, 1e-4)
	checkClose(t, "tiled vs untiled logvar", gl, gs, wl, ws, 1e-4)
	if _, _, _, err := m.EncodeTiled(context.Background(), img, shape, TileOptions{Tile: -1}); err == nil {
		t.Fatal("a negative tile size was accepted")
	}
}
