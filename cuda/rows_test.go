package cuda

import (
	"math/rand/v2"
	"testing"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// TestRowRangesMatchCPU checks Rows and AddRows against the CPU backend on
// every target: row-major and channels-last tensors, rows whose byte
// offsets suit the vectorised kernels and rows whose offsets do not (15
// elements a row), parts in the other layout and scaled.
func TestRowRangesMatchCPU(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 23))
	cases := []struct {
		name string
		sh   tensor.Shape
	}{
		{"tokens, aligned rows", tensor.Shape{5, 4, 8}},
		{"tokens, odd rows", tensor.Shape{5, 3, 5}},
		{"image", tensor.Shape{5, 8, 3, 2}},
		{"image, odd rows", tensor.Shape{5, 3, 1, 5}},
	}
	run := func(be backend.Backend, sh tensor.Shape, y, p1, p2 []float32) ([]float32, []float32) {
		rr := be.(backend.RowRanger)
		yt := be.FromFloat32(sh, y)
		psh := sh.Clone()
		psh[0] = 2
		a := be.FromFloat32(psh, p1)
		bsh := sh.Clone()
		bsh[0] = 1
		// the part of one row comes row-major (a 4-D reshape of a flat
		// upload): on the CUDA backend the other layout than y's image
		bt := be.Reshape(be.FromFloat32(tensor.Shape{1, len(p2)}, p2), bsh)
		mid := rr.Rows(yt, 1, 4)
		sum := rr.AddRows(yt, []backend.RowPart{{T: a, From: 1, Scale: 0.5}, {T: bt, From: 4, Scale: 1}})
		return be.ToFloat32(mid), be.ToFloat32(sum)
	}
	for _, c := range cases {
		per := c.sh.Numel() / c.sh[0]
		y, p1, p2 := randData(r, c.sh.Numel(), 1), randData(r, 2*per, 1), randData(r, per, 1)
		wantRows, wantSum := run(cpu.New(), c.sh, y, p1, p2)
		check(t, c.name, c.sh, func(be backend.Backend) ([]float32, []float32) { return run(be, c.sh, y, p1, p2) }, wantRows, wantSum)
	}
}

func check(t *testing.T, name string, sh tensor.Shape, run func(backend.Backend) ([]float32, []float32), wantRows, wantSum []float32) {
	t.Helper()
	for _, tg := range targets(t) {
		gotRows, gotSum := run(tg.be)
		if e := fixtures.RelErr(gotRows, wantRows); e > tg.tol {
			t.Errorf("%s %s %s: Rows differ from the CPU by %.3g", tg.name, name, sh, e)
		}
		if e := fixtures.RelErr(gotSum, wantSum); e > tg.tol {
			t.Errorf("%s %s %s: AddRows differs from the CPU by %.3g", tg.name, name, sh, e)
		}
	}
}
