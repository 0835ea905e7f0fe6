package qwenimage

import (
	"testing"

	"github.com/kiln-project/kiln/core/model/qwenimage/qitest"
	"github.com/kiln-project/kiln/core/rng"
)

// TestNoiseMatchesTorchGenerator: the pipelines' initial noise (and, for
// img2img, the posterior sample's noise drawn first from the same
// generator) is what Kiln's torch-compatible CPU generator draws.
func TestNoiseMatchesTorchGenerator(t *testing.T) {
	m := meta(t)
	refs := qitest.Refs(t)
	want, _ := qitest.Tensor(t, refs, "pipe.noise")
	qitest.Check(t, "t2i noise", rng.NewCPU(m.Pipe.Seed).Randn(len(want)), want, 1e-6)
	pn, _ := qitest.Tensor(t, refs, "i2i.posterior_noise")
	n, _ := qitest.Tensor(t, refs, "i2i.noise")
	g := rng.NewCPU(m.I2I.Seed)
	qitest.Check(t, "posterior noise", g.Randn(len(pn)), pn, 1e-6)
	qitest.Check(t, "img2img noise", g.Randn(len(n)), n, 1e-6)
}
