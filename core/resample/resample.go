// Package resample resizes images held as float32 planes (C, H, W or N·C
// planes in a row): Lanczos-3, computed as PIL's LANCZOS filter computes it
// on float images (separable, horizontal pass then vertical, the kernel
// widened by the scale when shrinking, so downscaling is antialiased), and
// bilinear as torch.nn.functional.interpolate computes it (align_corners
// false, no antialias; AUTOMATIC1111's "Latent" upscaler).
package resample

import (
	"fmt"
	"math"
	"runtime"
	"sync"
)

// lanczosSupport is the Lanczos-3 kernel's half-width in source pixels at
// scale 1.
const lanczosSupport = 3

// lanczos is the Lanczos-3 kernel sinc(x)·sinc(x/3) on (−3, 3).
func lanczos(x float64) float64 {
	if x <= -lanczosSupport || x >= lanczosSupport {
		return 0
	}
	return sinc(x) * sinc(x/lanczosSupport)
}

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	x *= math.Pi
	return math.Sin(x) / x
}

// taps are the source pixels and normalised weights of one output pixel.
type taps struct {
	first int
	w     []float64
}

// lanczosTaps computes, for each of out output pixels along an axis of in
// source pixels, PIL's Lanczos window: centre (o+0.5)·in/out, support
// 3·max(in/out, 1), weights normalised to sum 1 (so constants stay
// constant exactly up to rounding).
func lanczosTaps(in, out int) []taps {
	scale := float64(in) / float64(out)
	fs := max(scale, 1)
	support := lanczosSupport * fs
	res := make([]taps, out)
	for o := range res {
		centre := (float64(o) + 0.5) * scale
		lo := max(int(centre-support+0.5), 0)
		hi := min(int(centre+support+0.5), in)
		w := make([]float64, hi-lo)
		var sum float64
		for i := range w {
			w[i] = lanczos((float64(i+lo) - centre + 0.5) / fs)
			sum += w[i]
		}
		if sum != 0 {
			for i := range w {
				w[i] /= sum
			}
		}
		res[o] = taps{first: lo, w: w}
	}
	return res
}

// check validates a resize of planes planes of h×w to oh×ow.
func check(src []float32, planes, h, w, oh, ow int) error {
	switch {
	case planes < 1 || h < 1 || w < 1 || oh < 1 || ow < 1:
		return fmt.Errorf("resample: sizes must be positive: %d planes of %dx%d to %dx%d", planes, w, h, ow, oh)
	case len(src) != planes*h*w:
		return fmt.Errorf("resample: %d values for %d planes of %dx%d", len(src), planes, w, h)
	}
	return nil
}

// Lanczos resizes planes planes of h×w values to oh×ow with the Lanczos-3
// filter (PIL's LANCZOS on float images). The result is not clamped: the
// filter overshoots near hard edges.
func Lanczos(src []float32, planes, h, w, oh, ow int) ([]float32, error) {
	if err := check(src, planes, h, w, oh, ow); err != nil {
		return nil, err
	}
	hx, vy := lanczosTaps(w, ow), lanczosTaps(h, oh)
	mid := make([]float32, planes*h*ow)
	parallel(planes*h, func(r int) { // horizontal pass, row r of all planes
		in, out := src[r*w:(r+1)*w], mid[r*ow:(r+1)*ow]
		for x, t := range hx {
			var v float64
			for i, wt := range t.w {
				v += wt * float64(in[t.first+i])
			}
			out[x] = float32(v)
		}
	})
	dst := make([]float32, planes*oh*ow)
	parallel(planes*oh, func(r int) { // vertical pass
		p, y := r/oh, r%oh
		t := vy[y]
		in, out := mid[p*h*ow:(p+1)*h*ow], dst[r*ow:(r+1)*ow]
		acc := make([]float64, ow)
		for i, wt := range t.w {
			row := in[(t.first+i)*ow : (t.first+i+1)*ow]
			for x, v := range row {
				acc[x] += wt * float64(v)
			}
		}
		for x, v := range acc {
			out[x] = float32(v)
		}
	})
	return dst, nil
}

// Bilinear resizes planes planes of h×w values to oh×ow by bilinear
// interpolation between the source pixel centres (torch's interpolate,
// mode "bilinear", align_corners false, no antialias: shrinking skips
// pixels rather than averaging them).
func Bilinear(src []float32, planes, h, w, oh, ow int) ([]float32, error) {
	if err := check(src, planes, h, w, oh, ow); err != nil {
		return nil, err
	}
	type lin struct {
		i0, i1 int
		a      float32
	}
	axis := func(in, out int) []lin {
		l := make([]lin, out)
		scale := float64(in) / float64(out)
		for o := range l {
			f := max((float64(o)+0.5)*scale-0.5, 0)
			i0 := min(int(f), in-1)
			l[o] = lin{i0: i0, i1: min(i0+1, in-1), a: float32(f - float64(i0))}
		}
		return l
	}
	xs, ys := axis(w, ow), axis(h, oh)
	dst := make([]float32, planes*oh*ow)
	parallel(planes*oh, func(r int) {
		p, y := r/oh, r%oh
		ly := ys[y]
		r0, r1 := src[(p*h+ly.i0)*w:], src[(p*h+ly.i1)*w:]
		out := dst[r*ow : (r+1)*ow]
		for x, lx := range xs {
			top := r0[lx.i0] + lx.a*(r0[lx.i1]-r0[lx.i0])
			bot := r1[lx.i0] + lx.a*(r1[lx.i1]-r1[lx.i0])
			out[x] = top + ly.a*(bot-top)
		}
	})
	return dst, nil
}

// parallel calls f(i) for i in [0, n) on up to GOMAXPROCS goroutines, in
// contiguous chunks.
func parallel(n int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	chunk := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += chunk {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				f(i)
			}
		}(lo, min(lo+chunk, n))
	}
	wg.Wait()
}
