package cuda

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// TestLaunchLimits checks the launch configurations the driver refuses
// (CUDA_ERROR_INVALID_VALUE): zero and oversized grid or block dimensions.
func TestLaunchLimits(t *testing.T) {
	ok := launchCfg{grid: [3]uint32{1 << 20, maxGridYZ, maxGridYZ}, block: [3]uint32{32, 8, 1}}
	if err := ok.check(); err != nil {
		t.Errorf("%+v: %v", ok, err)
	}
	for _, c := range []launchCfg{
		{grid: [3]uint32{1, maxGridYZ + 1, 1}, block: [3]uint32{32, 8, 1}},
		{grid: [3]uint32{1, 1, maxGridYZ + 1}, block: [3]uint32{32, 8, 1}},
		{grid: [3]uint32{0, 1, 1}, block: [3]uint32{32, 8, 1}},
		{grid: [3]uint32{1, 1, 1}, block: [3]uint32{64, 32, 1}},
		{grid: [3]uint32{1, 1, 1}, block: [3]uint32{1, 1, 65}},
	} {
		if c.check() == nil {
			t.Errorf("%+v passes the launch check", c)
		}
	}
}

// TestLargeTransposes moves images whose pixel count exceeds one
// transpose launch's grid (more than 65535·32 rows; the bug behind
// "transpose_f16 CUDA_ERROR_INVALID_VALUE") and batches past the grid's z
// limit through the channels-last layout and back: ImageToTokens of the
// upload and TokensToImage before the download must equal the CPU, each
// transpose checked on its own. A pixel count that cannot be split fails
// with a message instead of an invalid launch.
func TestLargeTransposes(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 17))
	tokens := func(be backend.Backend, x *tensor.Tensor) []float32 {
		tok := be.ImageToTokens(x)
		defer be.Free(tok)
		return be.ToFloat32(tok)
	}
	tgs := targets(t)
	for _, sh := range []tensor.Shape{
		{1, 3, 1, 3 * maxTRows / 2}, // 3·2^5·… rows: three launches
		{2, 2, 1024, 2100},          // 2,150,400 pixels, two images
		{maxGridYZ + 9, 2, 1, 2},    // batches past the z limit
	} {
		x := randData(r, sh.Numel(), 1)
		// the reference layouts, computed here
		want := make([]float32, len(x))
		per, c := sh[2]*sh[3], sh[1]
		for b := 0; b < sh[0]; b++ {
			for ch := 0; ch < c; ch++ {
				for p := 0; p < per; p++ {
					want[(b*per+p)*c+ch] = x[(b*c+ch)*per+p]
				}
			}
		}
		for _, tg := range tgs {
			if tg.name != "fake/F32" && !strings.HasPrefix(tg.name, "gpu/") {
				continue // the emulator's f16/bf16 add nothing but time here
			}
			be := tg.be
			img := be.FromFloat32(sh, x)
			got := tokens(be, img)
			be.Free(img)
			if d := maxAbsDiff(got, want); d > tg.tol {
				t.Errorf("%s %s: upload transpose differs by %g", tg.name, sh, d)
				continue
			}
			tok := be.FromFloat32(tensor.Shape{sh[0], per, c}, want)
			back := be.TokensToImage(tok, sh[2], sh[3])
			gotImg := be.ToFloat32(back)
			be.Free(tok, back)
			if d := maxAbsDiff(gotImg, x); d > tg.tol {
				t.Errorf("%s %s: download transpose differs by %g", tg.name, sh, d)
			}
		}
	}
	d, _ := newFakeDevice(DefaultOptions())
	be := d.Backend(tensor.F32)
	err := func() (err error) {
		defer backend.Recover(&err)
		be.ToFloat32(be.FromFloat32(tensor.Shape{1, 2, 1, 2097131}, make([]float32, 2*2097131))) // a prime
		return nil
	}()
	if err == nil || !strings.Contains(err.Error(), "do not split") {
		t.Errorf("a prime pixel count past the grid: %v", err)
	}
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return 1e30
	}
	var m float64
	for i := range a {
		d := float64(a[i] - b[i])
		if d < 0 {
			d = -d
		}
		m = max(m, d)
	}
	return m
}
