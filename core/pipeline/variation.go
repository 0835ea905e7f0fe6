package pipeline

import (
	"errors"
	"fmt"
	"math"

	"github.com/kiln-project/kiln/core/rng"
)

// Variation is AUTOMATIC1111's variation seeds: the initial noise of image
// i is the spherical interpolation (rng.Slerp) between the noise of the
// request's seed and that of Subseed+i, by Strength. With a non-zero
// Strength every image keeps the request's seed (as A1111 does) and only
// the subseeds count up, so a batch explores around one seed.
type Variation struct {
	// Subseed seeds image 0's variation noise; image i uses Subseed+i.
	Subseed uint64
	// Strength in [0, 1]: 0 is the seed's noise, 1 the subseed's.
	Strength float64
	// ResizeFromWidth and ResizeFromHeight (both or neither), A1111's
	// seed_resize_from: the seed's (and subseed's) noise is drawn as for
	// an image of that size and placed in the middle of the noise of the
	// requested size, so a seed found at one size keeps its composition
	// at another.
	ResizeFromWidth, ResizeFromHeight int
}

// on reports whether v changes the initial noise.
func (v Variation) on() bool {
	return v.Strength != 0 || v.ResizeFromWidth != 0 || v.ResizeFromHeight != 0
}

// check validates the variation settings of a resolved job.
func (v Variation) check(j *job) error {
	switch {
	case math.IsNaN(v.Strength) || v.Strength < 0 || v.Strength > 1:
		return fmt.Errorf("pipeline: subseed strength %v must be in [0, 1]", v.Strength)
	case v.ResizeFromWidth < 0 || v.ResizeFromHeight < 0 || v.ResizeFromWidth > MaxSide || v.ResizeFromHeight > MaxSide:
		return fmt.Errorf("pipeline: seed resize size %dx%d must be within 0..%d", v.ResizeFromWidth, v.ResizeFromHeight, MaxSide)
	case (v.ResizeFromWidth == 0) != (v.ResizeFromHeight == 0):
		return errors.New("pipeline: give both seed resize width and height, or neither")
	case !v.on():
		return nil
	case v.ResizeFromWidth != 0 && (v.ResizeFromWidth < j.req.Width/j.w || v.ResizeFromHeight < j.req.Height/j.h):
		return fmt.Errorf("pipeline: seed resize size %dx%d is smaller than one latent cell", v.ResizeFromWidth, v.ResizeFromHeight)
	case j.req.SharedGenerator:
		return errors.New("pipeline: variation seeds need a generator per image (not a shared generator)")
	case j.req.Noise != nil:
		return errors.New("pipeline: variation seeds and explicit noise exclude each other")
	}
	if v.Strength != 0 {
		for i := 0; i < j.n; i++ {
			j.subseeds = append(j.subseeds, v.Subseed+uint64(i))
		}
	}
	return nil
}

// initialNoise draws the batch's initial noise: each image's generator's
// first draw, mixed with its variation noise when the request asks for it.
// The generators advance exactly as without variation (A1111 draws the
// resized and subseed noise from generators of their own).
func (j *job) initialNoise() []float32 {
	noise := j.draw(j.per)
	v := j.req.Variation
	if !v.on() {
		return noise
	}
	f := j.req.Height / j.h
	nh, nw := j.h, j.w
	resize := v.ResizeFromWidth > 0 && (v.ResizeFromHeight/f != j.h || v.ResizeFromWidth/f != j.w)
	if resize {
		nh, nw = v.ResizeFromHeight/f, v.ResizeFromWidth/f
	}
	for i := 0; i < j.n; i++ {
		img := noise[i*j.per : (i+1)*j.per]
		base := img
		if resize {
			base = newGen(j.req.RNG, j.seeds[i]).Randn(j.c * nh * nw)
		}
		if v.Strength != 0 {
			sub := newGen(j.req.RNG, j.subseeds[i]).Randn(j.c * nh * nw)
			base = rng.Slerp(v.Strength, base, sub, j.c, nh, nw)
		}
		if resize {
			rng.PasteCentered(img, j.c, j.h, j.w, base, nh, nw)
		} else {
			copy(img, base)
		}
	}
	return noise
}

// newGen returns a generator of a kind resolve already accepted.
func newGen(kind string, seed uint64) rng.Generator {
	g, err := rng.New(kind, seed)
	if err != nil {
		panic(fmt.Sprintf("pipeline: generator %q accepted before: %v", kind, err))
	}
	return g
}
