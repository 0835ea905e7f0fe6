package pipeline

import (
	"context"
	"image"
	"image/color"
	"testing"

	"github.com/kiln-project/kiln/core/rng"
)

// editRequest is a small deterministic request on the fixture model.
func editRequest(seed uint64) Request {
	return Request{Prompt: "a red square", Width: 64, Height: 64, Steps: 4, Sampler: "euler", Seed: seed, Guidance: 3}
}

// testImage is a w×h image with a gradient and a few hard edges.
func testImage(w, h int) *image.RGBA {
	im := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := uint8((x * 255) / max(w-1, 1))
			if (x/16+y/16)%2 == 0 {
				v = 255 - v
			}
			im.SetRGBA(x, y, color.RGBA{v, uint8((y * 200) / max(h-1, 1)), uint8(x ^ y), 255})
		}
	}
	return im
}

func generate(t *testing.T, p *Pipeline, req Request) *Result {
	t.Helper()
	res, err := p.Generate(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func sameFloats(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if a[k] != b[k] {
			return false
		}
	}
	return true
}

// TestVariationSeeds checks A1111's subseed semantics: strength 1 is the
// subseed's image (a deterministic sampler's result equals a plain run
// with seed = subseed), strength in between is reproducible and unlike
// either end, and a batch keeps the seed while the subseeds count up.
func TestVariationSeeds(t *testing.T) {
	e := loadEnv(t)
	p := e.pipe
	plain := editRequest(7)
	plain.SkipDecode = true
	a := generate(t, p, plain)
	other := plain
	other.Seed = 99
	b := generate(t, p, other)

	zero := plain
	zero.Variation = Variation{Subseed: 99}
	if r := generate(t, p, zero); !sameFloats(r.Latents, a.Latents) || r.Subseeds != nil {
		t.Fatal("strength 0 changed the seed's image")
	}
	full := plain
	full.Variation = Variation{Subseed: 99, Strength: 1}
	r1 := generate(t, p, full)
	if !sameFloats(r1.Latents, b.Latents) {
		t.Fatal("strength 1 is not the subseed's image")
	}
	half := plain
	half.Variation = Variation{Subseed: 99, Strength: 0.5}
	h1, h2 := generate(t, p, half), generate(t, p, half)
	if !sameFloats(h1.Latents, h2.Latents) {
		t.Fatal("strength 0.5 is not deterministic")
	}
	if sameFloats(h1.Latents, a.Latents) || sameFloats(h1.Latents, b.Latents) {
		t.Fatal("strength 0.5 equals an end")
	}
	batch := half
	batch.N = 2
	rb := generate(t, p, batch)
	if rb.Seeds[0] != 7 || rb.Seeds[1] != 7 || rb.Subseeds[0] != 99 || rb.Subseeds[1] != 100 {
		t.Fatalf("seeds %v subseeds %v, want [7 7] [99 100]", rb.Seeds, rb.Subseeds)
	}
	one := half
	one.Variation.Subseed = 100
	r100 := generate(t, p, one)
	per := len(rb.Latents) / 2
	if !sameFloats(rb.Latents[:per], h1.Latents) || !sameFloats(rb.Latents[per:], r100.Latents) {
		t.Fatal("a batch's images differ from their single runs")
	}
}

// TestSeedResizeFrom checks that noise drawn "from" a smaller size sits in
// the middle of the larger noise, the rest being the seed's own draw.
func TestSeedResizeFrom(t *testing.T) {
	e := loadEnv(t)
	req := editRequest(11)
	req.Width, req.Height = 128, 96
	req.Variation = Variation{ResizeFromWidth: 64, ResizeFromHeight: 64}
	j, err := e.pipe.resolve(req)
	if err != nil {
		t.Fatal(err)
	}
	got := j.initialNoise()
	f := e.pipe.Factor()
	c, h, w := 4, 96/f, 128/f
	sh, sw := 64/f, 64/f
	dy, dx := (h-sh)/2, (w-sw)/2
	own := rng.NewCPU(11).Randn(c * h * w)
	small := rng.NewCPU(11).Randn(c * sh * sw)
	for ch := 0; ch < c; ch++ {
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				want := own[(ch*h+y)*w+x]
				if y >= dy && y < dy+sh && x >= dx && x < dx+sw {
					want = small[(ch*sh+y-dy)*sw+x-dx]
				}
				if v := got[(ch*h+y)*w+x]; v != want {
					t.Fatalf("noise at c%d y%d x%d is %v, want %v", ch, y, x, v, want)
				}
			}
		}
	}
	// resizing from the request's own size changes nothing
	same := editRequest(11)
	same.Variation = Variation{ResizeFromWidth: 64, ResizeFromHeight: 64}
	j2, err := e.pipe.resolve(same)
	if err != nil {
		t.Fatal(err)
	}
	if !sameFloats(j2.initialNoise(), rng.NewCPU(11).Randn(4*sh*sw)) {
		t.Fatal("resize from the same size changed the noise")
	}
}

// centreMask is a w×h mask, white in the rectangle r.
func centreMask(w, h int, r image.Rectangle) *image.Gray {
	m := image.NewGray(image.Rect(0, 0, w, h))
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			m.SetGray(x, y, color.Gray{Y: 255})
		}
	}
	return m
}

// TestInpaintKeepsUnmaskedPixels checks the paste-back (pixels the blurred
// mask does not reach are the input's, bit for bit), that the masked
// region is repainted, and that the latents outside the latent mask end as
// the init image's (they do not depend on the seed).
func TestInpaintKeepsUnmaskedPixels(t *testing.T) {
	e := loadEnv(t)
	init := testImage(64, 64)
	hole := image.Rect(16, 16, 48, 40)
	for _, fill := range []string{FillDefault, FillOriginal, FillLatentNoise, FillLatentNothing} {
		req := editRequest(5)
		req.InitImage = init
		req.Edit = Edit{Mask: centreMask(64, 64, hole), MaskBlur: 2, Fill: fill}
		res := generate(t, e.pipe, req)
		other := req
		other.Seed = 6
		res2 := generate(t, e.pipe, other)
		out := res.Images[0]
		reach := hole.Inset(-5) // blur radius int(2.5·2+0.5) = 5
		changed := 0
		for y := 0; y < 64; y++ {
			for x := 0; x < 64; x++ {
				got, want := out.RGBAAt(x, y), init.RGBAAt(x, y)
				if !(image.Point{x, y}.In(reach)) && got != want {
					t.Fatalf("fill %q: pixel (%d,%d) outside the mask is %v, input %v", fill, x, y, got, want)
				}
				if (image.Point{x, y}.In(hole)) && got != want {
					changed++
				}
			}
		}
		if changed < hole.Dx()*hole.Dy()/2 {
			t.Fatalf("fill %q: only %d of %d masked pixels repainted", fill, changed, hole.Dx()*hole.Dy())
		}
		// the masked latents follow the seed
		f := e.pipe.Factor()
		lw := 64 / f
		diffIn := 0
		for c := 0; c < 4; c++ {
			for y := 0; y < lw; y++ {
				for x := 0; x < lw; x++ {
					k := (c*lw+y)*lw + x
					if (image.Point{x * f, y * f}).In(hole) && res.Latents[k] != res2.Latents[k] {
						diffIn++
					}
				}
			}
		}
		if diffIn == 0 {
			t.Fatalf("fill %q: masked latents do not depend on the seed", fill)
		}
	}
}

// TestInpaintBlendsToInitLatents checks diffusers' 4-channel blending: the
// final latents outside the latent mask are the init image's latents
// exactly (the last blend uses the clean ones).
func TestInpaintBlendsToInitLatents(t *testing.T) {
	e := loadEnv(t)
	req := editRequest(3)
	req.InitImage = testImage(64, 64)
	req.Edit = Edit{Mask: centreMask(64, 64, image.Rect(0, 0, 32, 64))}
	req.SkipDecode = true
	j, err := e.pipe.resolve(req)
	if err != nil {
		t.Fatal(err)
	}
	x0, err := e.pipe.encodeInit(context.Background(), j)
	if err != nil {
		t.Fatal(err)
	}
	res := generate(t, e.pipe, req)
	f := e.pipe.Factor()
	lw := 64 / f
	for c := 0; c < 4; c++ {
		for y := 0; y < lw; y++ {
			for x := 0; x < lw; x++ {
				k := (c*lw+y)*lw + x
				if x*f < 32 {
					if res.Latents[k] == x0[k] {
						t.Fatalf("masked latent c%d y%d x%d kept the init value", c, y, x)
					}
				} else if res.Latents[k] != x0[k] {
					t.Fatalf("unmasked latent c%d y%d x%d is %v, init %v", c, y, x, res.Latents[k], x0[k])
				}
			}
		}
	}
}

// TestOutpaint extends a 48×64 image by 8 left and 8 right and 0/16
// top/bottom and checks the canvas size, the untouched middle and the
// repainted border.
func TestOutpaint(t *testing.T) {
	e := loadEnv(t)
	init := testImage(48, 48)
	req := editRequest(9)
	req.InitImage = init
	req.Edit = Edit{Outpaint: Outpaint{Left: 8, Right: 8, Bottom: 16}}
	res := generate(t, e.pipe, req)
	out := res.Images[0]
	if b := out.Bounds(); b.Dx() != 64 || b.Dy() != 64 {
		t.Fatalf("canvas %v, want 64×64", b)
	}
	// the original minus the overlap strips on extended sides is unchanged
	for y := 0; y < 48-OutpaintOverlap; y++ {
		for x := OutpaintOverlap; x < 48-OutpaintOverlap; x++ {
			if got, want := out.RGBAAt(x+8, y), init.RGBAAt(x, y); got != want {
				t.Fatalf("original pixel (%d,%d) is %v, want %v", x, y, got, want)
			}
		}
	}
	fill := extendCanvas(init, Outpaint{Left: 8, Right: 8, Bottom: 16})
	same := 0
	for y := 48; y < 64; y++ {
		for x := 0; x < 64; x++ {
			if out.RGBAAt(x, y) == fill.RGBAAt(x, y) {
				same++
			}
		}
	}
	if same > 64*16/4 {
		t.Fatalf("%d of %d border pixels kept the fill", same, 64*16)
	}
}

// TestExtendCanvasFill checks the edge-aware fill: next to the image a new
// pixel repeats the nearest edge pixel, at the far side it is the edge
// mean.
func TestExtendCanvasFill(t *testing.T) {
	im := image.NewRGBA(image.Rect(0, 0, 2, 2))
	im.SetRGBA(0, 0, color.RGBA{200, 0, 0, 255})
	im.SetRGBA(1, 0, color.RGBA{0, 200, 0, 255})
	im.SetRGBA(0, 1, color.RGBA{0, 0, 200, 255})
	im.SetRGBA(1, 1, color.RGBA{100, 100, 100, 255})
	out := extendCanvas(im, Outpaint{Left: 4, Top: 1})
	if got := out.RGBAAt(4, 1); got != im.RGBAAt(0, 0) {
		t.Fatalf("image pixel moved: %v", got)
	}
	// one pixel left of (0,0): 3/4 edge + 1/4 mean (75, 75, 75)
	if got, want := out.RGBAAt(3, 1), (color.RGBA{169, 19, 19, 255}); got != want {
		t.Fatalf("next to the edge: %v, want %v", got, want)
	}
	if got, want := out.RGBAAt(0, 2), (color.RGBA{75, 75, 75, 255}); got != want {
		t.Fatalf("far side: %v, want %v", got, want)
	}
}

// TestEditErrors checks that bad edit settings are refused.
func TestEditErrors(t *testing.T) {
	e := loadEnv(t)
	mask := centreMask(64, 64, image.Rect(0, 0, 8, 8))
	init := testImage(64, 64)
	cases := map[string]Request{
		"mask without image": {Prompt: "x", Width: 64, Height: 64, Edit: Edit{Mask: mask}},
		"unknown fill":       {Prompt: "x", InitImage: init, Edit: Edit{Mask: mask, Fill: "fill"}},
		"negative blur":      {Prompt: "x", InitImage: init, Edit: Edit{Mask: mask, MaskBlur: -1}},
		"blur without mask":  {Prompt: "x", Width: 64, Height: 64, Edit: Edit{MaskBlur: 4}},
		"mask and outpaint":  {Prompt: "x", InitImage: init, Edit: Edit{Mask: mask, Outpaint: Outpaint{Left: 8}}},
		"outpaint no image":  {Prompt: "x", Edit: Edit{Outpaint: Outpaint{Left: 8}}},
		"outpaint negative":  {Prompt: "x", InitImage: init, Edit: Edit{Outpaint: Outpaint{Left: -8}}},
		"outpaint odd":       {Prompt: "x", InitImage: init, Edit: Edit{Outpaint: Outpaint{Left: 3}}},
		"outpaint size":      {Prompt: "x", InitImage: init, Width: 64, Height: 64, Edit: Edit{Outpaint: Outpaint{Left: 8}}},
		"strength range":     {Prompt: "x", Width: 64, Height: 64, Variation: Variation{Subseed: 1, Strength: 2}},
		"resize half":        {Prompt: "x", Width: 64, Height: 64, Variation: Variation{ResizeFromWidth: 64}},
		"resize tiny":        {Prompt: "x", Width: 64, Height: 64, Variation: Variation{ResizeFromWidth: 2, ResizeFromHeight: 2}},
		"variation shared":   {Prompt: "x", Width: 64, Height: 64, SharedGenerator: true, Variation: Variation{Strength: 0.5}},
		"variation noise":    {Prompt: "x", Width: 64, Height: 64, Noise: make([]float32, 4*16*16), Variation: Variation{Strength: 0.5}},
	}
	for name, req := range cases {
		if _, err := e.pipe.Generate(context.Background(), req, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestInpaintWholeMaskIsImg2Img checks that a mask repainting everything
// makes inpainting img2img: the same latents with a deterministic sampler,
// and with an ancestral one the generators advanced by the masked image's
// posterior sample, as diffusers draws it.
func TestInpaintWholeMaskIsImg2Img(t *testing.T) {
	e := loadEnv(t)
	for _, c := range []struct {
		sampler string
		same    bool
	}{{"euler", true}, {"euler_a", false}} {
		plain := editRequest(12)
		plain.Sampler, plain.Steps, plain.SkipDecode = c.sampler, 6, true
		plain.InitImage, plain.Strength = testImage(64, 64), 0.6
		inpaint := plain
		inpaint.Edit = Edit{Mask: centreMask(64, 64, image.Rect(0, 0, 64, 64))}
		a, b := generate(t, e.pipe, plain), generate(t, e.pipe, inpaint)
		if got := sameFloats(a.Latents, b.Latents); got != c.same {
			t.Errorf("%s: inpainting with a whole mask equals img2img: %v, want %v", c.sampler, got, c.same)
		}
	}
}
