package rng

import "math"

// Slerp mixes two noise tensors of shape (c, h, w) as AUTOMATIC1111's
// variation seeds do (its slerp(val, low, high) on one image's noise):
// each (channel, column) vector along the rows is normalised, the angle
// between the two is taken per vector, and the result is the spherical
// interpolation sin((1−t)ω)/sin ω·low + sin(tω)/sin ω·high. When the
// vectors are nearly parallel on average (mean cosine > 0.9995) it falls
// back to A1111's linear mix low·t + high·(1−t), weights as A1111 has
// them. t = 0 returns low and t = 1 returns high (bit for bit, barring the
// parallel fallback). The result is a new slice.
func Slerp(t float64, low, high []float32, c, h, w int) []float32 {
	out := make([]float32, len(low))
	cols := c * w
	dots := make([]float64, cols)
	var mean float64
	for ch := 0; ch < c; ch++ {
		for x := 0; x < w; x++ {
			var nl, nh, dot float64
			for y := 0; y < h; y++ {
				k := (ch*h+y)*w + x
				l, hi := float64(low[k]), float64(high[k])
				nl += l * l
				nh += hi * hi
				dot += l * hi
			}
			d := dot / (math.Sqrt(nl) * math.Sqrt(nh))
			dots[ch*w+x] = d
			mean += d
		}
	}
	mean /= float64(cols)
	if mean > 0.9995 {
		for k := range out {
			out[k] = float32(float64(low[k])*t + float64(high[k])*(1-t))
		}
		return out
	}
	for ch := 0; ch < c; ch++ {
		for x := 0; x < w; x++ {
			omega := math.Acos(min(max(dots[ch*w+x], -1), 1))
			so := math.Sin(omega)
			a, b := math.Sin((1-t)*omega)/so, math.Sin(t*omega)/so
			for y := 0; y < h; y++ {
				k := (ch*h+y)*w + x
				out[k] = float32(a*float64(low[k]) + b*float64(high[k]))
			}
		}
	}
	return out
}

// PasteCentered copies the centre of src, a (c, sh, sw) tensor, into the
// centre of dst, a (c, dh, dw) tensor, as AUTOMATIC1111's seed_resize_from
// places noise drawn at another size: when src is smaller it lands in the
// middle of dst, when larger its middle is cut out (offsets round down).
func PasteCentered(dst []float32, c, dh, dw int, src []float32, sh, sw int) {
	dx, dy := (dw-sw)/2, (dh-sh)/2
	if dw-sw < 0 && (dw-sw)%2 != 0 {
		dx-- // Python's floor division
	}
	if dh-sh < 0 && (dh-sh)%2 != 0 {
		dy--
	}
	w, h := sw, sh
	if dx < 0 {
		w = sw + 2*dx
	}
	if dy < 0 {
		h = sh + 2*dy
	}
	tx, ty := max(dx, 0), max(dy, 0)
	sx, sy := max(-dx, 0), max(-dy, 0)
	for ch := 0; ch < c; ch++ {
		for y := 0; y < h; y++ {
			copy(dst[(ch*dh+ty+y)*dw+tx:(ch*dh+ty+y)*dw+tx+w], src[(ch*sh+sy+y)*sw+sx:(ch*sh+sy+y)*sw+sx+w])
		}
	}
}
