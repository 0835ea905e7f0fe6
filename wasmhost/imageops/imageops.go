// Package imageops holds the native image operations Kiln offers to Wasm
// nodes as host functions (and runs itself in the native fallbacks):
// resampling, cropping, compositing, text drawn with a built-in bitmap font,
// and colour matrices. Images are 8-bit non-premultiplied RGBA
// (*image.NRGBA); every operation checks its bounds and returns an error
// instead of panicking.
package imageops

import (
	"errors"
	"image"
	"image/color"
	"math"
	"strconv"
)

// Filter selects a resampling kernel.
type Filter int

// The resampling filters.
const (
	// Linear is a triangle filter widened when downscaling (antialiased
	// bilinear); the default.
	Linear Filter = 0
	// Nearest picks the nearest source pixel.
	Nearest Filter = 1
)

// ErrBounds is matched (errors.Is) by errors about rectangles outside an
// image.
var ErrBounds = errors.New("imageops: out of bounds")

type boundsError struct{ msg string }

func (e *boundsError) Error() string        { return e.msg }
func (e *boundsError) Is(target error) bool { return target == ErrBounds }

// The package avoids fmt so that Wasm guests importing it stay small.
func itoa(v int) string     { return strconv.Itoa(v) }
func ftoa(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
func dims(w, h int) string  { return itoa(w) + "×" + itoa(h) }

func check(name string, im *image.NRGBA) error {
	if im == nil {
		return errors.New("imageops: " + name + " image is nil")
	}
	w, h := im.Rect.Dx(), im.Rect.Dy()
	if w <= 0 || h <= 0 {
		return errors.New("imageops: " + name + " image is empty (" + dims(w, h) + ")")
	}
	if im.Stride < 4*w || len(im.Pix) < im.Stride*(h-1)+4*w {
		return errors.New("imageops: " + name + " image buffer too small for " + dims(w, h))
	}
	return nil
}

// New returns a w×h image at the origin, wrapping pix when it is exactly
// 4·w·h bytes long (no copy) or allocating a zeroed buffer when pix is nil.
func New(w, h int, pix []byte) (*image.NRGBA, error) {
	if w <= 0 || h <= 0 {
		return nil, errors.New("imageops: invalid size " + dims(w, h))
	}
	n := 4 * w * h
	if pix == nil {
		pix = make([]byte, n)
	}
	if len(pix) != n {
		return nil, errors.New("imageops: " + dims(w, h) + " needs " + itoa(n) + " bytes, got " + itoa(len(pix)))
	}
	return &image.NRGBA{Pix: pix, Stride: 4 * w, Rect: image.Rect(0, 0, w, h)}, nil
}

// Resize resamples src into dst, whose bounds give the target size.
func Resize(dst, src *image.NRGBA, f Filter) error {
	if err := check("source", src); err != nil {
		return err
	}
	if err := check("destination", dst); err != nil {
		return err
	}
	switch f {
	case Nearest:
		resizeNearest(dst, src)
		return nil
	case Linear:
		resizeLinear(dst, src)
		return nil
	default:
		return errors.New("imageops: unknown filter " + itoa(int(f)))
	}
}

func resizeNearest(dst, src *image.NRGBA) {
	sw, sh := src.Rect.Dx(), src.Rect.Dy()
	dw, dh := dst.Rect.Dx(), dst.Rect.Dy()
	xs := make([]int, dw)
	for x := range xs {
		xs[x] = 4 * int((int64(2*x+1)*int64(sw))/int64(2*dw))
	}
	for y := 0; y < dh; y++ {
		sy := int((int64(2*y+1) * int64(sh)) / int64(2*dh))
		srow := src.Pix[sy*src.Stride:]
		drow := dst.Pix[y*dst.Stride:]
		for x, sx := range xs {
			copy(drow[4*x:4*x+4], srow[sx:sx+4])
		}
	}
}

// taps holds, for every output sample, the first input index and the
// normalised weights of the contiguous inputs it reads.
type taps struct {
	start []int
	off   []int // offsets into w, len(out)+1
	w     []float32
}

func makeTaps(in, out int) taps {
	scale := float64(in) / float64(out)
	support := math.Max(1, scale)
	t := taps{start: make([]int, out), off: make([]int, out+1)}
	for i := 0; i < out; i++ {
		c := (float64(i) + 0.5) * scale
		lo := int(math.Floor(c - support))
		hi := int(math.Ceil(c + support))
		if lo < 0 {
			lo = 0
		}
		if hi > in-1 {
			hi = in - 1
		}
		if hi < lo {
			hi = lo
		}
		t.start[i] = lo
		sum := 0.0
		first := len(t.w)
		for j := lo; j <= hi; j++ {
			d := math.Abs((float64(j)+0.5)-c) / support
			wt := 1 - d
			if wt < 0 {
				wt = 0
			}
			t.w = append(t.w, float32(wt))
			sum += wt
		}
		if sum == 0 {
			// Degenerate (cannot happen with support ≥ 1); fall back to nearest.
			for k := first; k < len(t.w); k++ {
				t.w[k] = 0
			}
			t.w[first] = 1
			sum = 1
		}
		for k := first; k < len(t.w); k++ {
			t.w[k] = float32(float64(t.w[k]) / sum)
		}
		t.off[i+1] = len(t.w)
	}
	return t
}

// resizeLinear resamples in premultiplied float space, one axis at a time,
// choosing the order that keeps the intermediate buffer smallest.
func resizeLinear(dst, src *image.NRGBA) {
	sw, sh := src.Rect.Dx(), src.Rect.Dy()
	dw, dh := dst.Rect.Dx(), dst.Rect.Dy()
	tx, ty := makeTaps(sw, dw), makeTaps(sh, dh)
	if int64(dw)*int64(sh) <= int64(sw)*int64(dh) {
		// Horizontal first: tmp is dw×sh.
		tmp := make([]float32, 4*dw*sh)
		for y := 0; y < sh; y++ {
			row := src.Pix[y*src.Stride:]
			out := tmp[4*dw*y:]
			for x := 0; x < dw; x++ {
				var r, g, b, a float32
				ws := tx.w[tx.off[x]:tx.off[x+1]]
				p := 4 * tx.start[x]
				for _, w := range ws {
					pa := float32(row[p+3]) * w
					r += float32(row[p]) * pa
					g += float32(row[p+1]) * pa
					b += float32(row[p+2]) * pa
					a += pa
					p += 4
				}
				out[4*x], out[4*x+1], out[4*x+2], out[4*x+3] = r, g, b, a
			}
		}
		for y := 0; y < dh; y++ {
			ws := ty.w[ty.off[y]:ty.off[y+1]]
			base := ty.start[y]
			drow := dst.Pix[y*dst.Stride:]
			for x := 0; x < dw; x++ {
				var r, g, b, a float32
				p := 4 * (base*dw + x)
				for _, w := range ws {
					r += tmp[p] * w
					g += tmp[p+1] * w
					b += tmp[p+2] * w
					a += tmp[p+3] * w
					p += 4 * dw
				}
				store(drow[4*x:4*x+4], r, g, b, a)
			}
		}
		return
	}
	// Vertical first: tmp is sw×dh.
	tmp := make([]float32, 4*sw*dh)
	for y := 0; y < dh; y++ {
		ws := ty.w[ty.off[y]:ty.off[y+1]]
		base := ty.start[y]
		out := tmp[4*sw*y:]
		for x := 0; x < sw; x++ {
			var r, g, b, a float32
			p := base*src.Stride + 4*x
			for _, w := range ws {
				pa := float32(src.Pix[p+3]) * w
				r += float32(src.Pix[p]) * pa
				g += float32(src.Pix[p+1]) * pa
				b += float32(src.Pix[p+2]) * pa
				a += pa
				p += src.Stride
			}
			out[4*x], out[4*x+1], out[4*x+2], out[4*x+3] = r, g, b, a
		}
	}
	for y := 0; y < dh; y++ {
		row := tmp[4*sw*y:]
		drow := dst.Pix[y*dst.Stride:]
		for x := 0; x < dw; x++ {
			var r, g, b, a float32
			ws := tx.w[tx.off[x]:tx.off[x+1]]
			p := 4 * tx.start[x]
			for _, w := range ws {
				r += row[p] * w
				g += row[p+1] * w
				b += row[p+2] * w
				a += row[p+3] * w
				p += 4
			}
			store(drow[4*x:4*x+4], r, g, b, a)
		}
	}
}

// store un-premultiplies (r,g,b scaled by alpha in 0..255) and rounds.
func store(px []byte, r, g, b, a float32) {
	if a <= 0.5/255 {
		px[0], px[1], px[2], px[3] = 0, 0, 0, 0
		return
	}
	inv := 1 / a
	px[0] = clamp8(r * inv)
	px[1] = clamp8(g * inv)
	px[2] = clamp8(b * inv)
	px[3] = clamp8(a)
}

func clamp8(v float32) uint8 {
	if v <= 0 {
		return 0
	}
	if v >= 255 {
		return 255
	}
	return uint8(v + 0.5)
}

// Crop copies the rectangle of dst's size whose top-left corner is (x, y)
// in src into dst.
func Crop(dst, src *image.NRGBA, x, y int) error {
	if err := check("source", src); err != nil {
		return err
	}
	if err := check("destination", dst); err != nil {
		return err
	}
	w, h := dst.Rect.Dx(), dst.Rect.Dy()
	if x < 0 || y < 0 || x+w > src.Rect.Dx() || y+h > src.Rect.Dy() {
		return &boundsError{"imageops: crop " + dims(w, h) + " at (" + itoa(x) + "," + itoa(y) + ") of a " +
			dims(src.Rect.Dx(), src.Rect.Dy()) + " image: out of bounds"}
	}
	for r := 0; r < h; r++ {
		s := src.Pix[(y+r)*src.Stride+4*x:]
		copy(dst.Pix[r*dst.Stride:r*dst.Stride+4*w], s[:4*w])
	}
	return nil
}

// blend composites colour c with coverage cov (0..1) over the pixel px.
func blend(px []byte, c color.NRGBA, cov float32) {
	sa := float32(c.A) / 255 * cov
	if sa <= 0 {
		return
	}
	da := float32(px[3]) / 255
	oa := sa + da*(1-sa)
	if oa <= 0 {
		return
	}
	k := da * (1 - sa)
	px[0] = clamp8((float32(c.R)*sa + float32(px[0])*k) / oa)
	px[1] = clamp8((float32(c.G)*sa + float32(px[1])*k) / oa)
	px[2] = clamp8((float32(c.B)*sa + float32(px[2])*k) / oa)
	px[3] = clamp8(oa * 255)
}

// Overlay composites src over dst with its top-left corner at (x, y),
// scaling src's alpha by opacity (0..1). Parts outside dst are clipped.
func Overlay(dst, src *image.NRGBA, x, y int, opacity float32) error {
	if err := check("source", src); err != nil {
		return err
	}
	if err := check("destination", dst); err != nil {
		return err
	}
	if !(opacity >= 0 && opacity <= 1) {
		return errors.New("imageops: opacity " + ftoa(float64(opacity)) + " outside 0..1")
	}
	r := image.Rect(x, y, x+src.Rect.Dx(), y+src.Rect.Dy()).Intersect(image.Rect(0, 0, dst.Rect.Dx(), dst.Rect.Dy()))
	for py := r.Min.Y; py < r.Max.Y; py++ {
		for px := r.Min.X; px < r.Max.X; px++ {
			s := src.Pix[(py-y)*src.Stride+4*(px-x):]
			c := color.NRGBA{s[0], s[1], s[2], s[3]}
			blend(dst.Pix[py*dst.Stride+4*px:], c, opacity)
		}
	}
	return nil
}

// fillRect blends c over the rectangle r of dst, clipped.
func fillRect(dst *image.NRGBA, r image.Rectangle, c color.NRGBA) {
	r = r.Intersect(image.Rect(0, 0, dst.Rect.Dx(), dst.Rect.Dy()))
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			blend(dst.Pix[y*dst.Stride+4*x:], c, 1)
		}
	}
}

// MaxTextScale bounds the glyph scale of DrawText.
const MaxTextScale = 64

// MaxTextRunes bounds the text DrawText draws.
const MaxTextRunes = 1024

// TextSize returns the width and height in pixels of text drawn at scale
// (lines separated by '\n').
func TextSize(text string, scale int) (w, h int) {
	lines, cols, maxCols := 1, 0, 0
	for _, r := range text {
		if r == '\n' {
			lines++
			cols = 0
			continue
		}
		cols++
		if cols > maxCols {
			maxCols = cols
		}
	}
	if maxCols == 0 {
		return 0, 0
	}
	return (maxCols*cellW - 1) * scale, (lines*cellH - 1) * scale
}

// DrawText draws text with the built-in font at scale with its top-left
// corner at (x, y): first, when bg is not transparent, a background box
// with pad pixels around the text, then the glyphs in fg, each blended
// over the image. Everything outside dst is clipped.
func DrawText(dst *image.NRGBA, x, y int, text string, scale, pad int, fg, bg color.NRGBA) error {
	if err := check("destination", dst); err != nil {
		return err
	}
	if scale < 1 || scale > MaxTextScale {
		return errors.New("imageops: text scale " + itoa(scale) + " outside 1.." + itoa(MaxTextScale))
	}
	if pad < 0 || pad > 1024 {
		return errors.New("imageops: text padding " + itoa(pad) + " outside 0..1024")
	}
	n := 0
	for range text {
		n++
	}
	if n > MaxTextRunes {
		return errors.New("imageops: text of " + itoa(n) + " characters exceeds " + itoa(MaxTextRunes))
	}
	tw, th := TextSize(text, scale)
	if tw == 0 {
		return nil
	}
	if bg.A > 0 {
		fillRect(dst, image.Rect(x-pad, y-pad, x+tw+pad, y+th+pad), bg)
	}
	bounds := image.Rect(0, 0, dst.Rect.Dx(), dst.Rect.Dy())
	cx, cy := x, y
	for _, r := range text {
		if r == '\n' {
			cx = x
			cy += cellH * scale
			continue
		}
		g := glyph(r)
		cell := image.Rect(cx, cy, cx+glyphW*scale, cy+glyphH*scale)
		if cell.Overlaps(bounds) {
			for row := 0; row < glyphH; row++ {
				bits := g[row]
				for col := 0; col < glyphW; col++ {
					if bits&(1<<(glyphW-1-col)) == 0 {
						continue
					}
					px := image.Rect(cx+col*scale, cy+row*scale, cx+(col+1)*scale, cy+(row+1)*scale)
					fillRect(dst, px, fg)
				}
			}
		}
		cx += cellW * scale
	}
	return nil
}

// ColorMatrix is a 4×5 row-major matrix over (R, G, B, A, 1) with
// channels in 0..255: R' = m[0]·R + m[1]·G + m[2]·B + m[3]·A + m[4], and so
// on for G', B' and A'.
type ColorMatrix [20]float32

// Identity returns the matrix that leaves colours unchanged.
func Identity() ColorMatrix {
	return ColorMatrix{1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0}
}

// Grayscale returns the matrix that blends each pixel towards its Rec. 709
// luma by amount (0 = unchanged, 1 = fully grey).
func Grayscale(amount float32) ColorMatrix {
	lr, lg, lb := float32(0.2126), float32(0.7152), float32(0.0722)
	k := 1 - amount
	return ColorMatrix{
		lr*amount + k, lg * amount, lb * amount, 0, 0,
		lr * amount, lg*amount + k, lb * amount, 0, 0,
		lr * amount, lg * amount, lb*amount + k, 0, 0,
		0, 0, 0, 1, 0,
	}
}

// ApplyColorMatrix transforms every pixel of im by m in place.
func ApplyColorMatrix(im *image.NRGBA, m *ColorMatrix) error {
	if err := check("image", im); err != nil {
		return err
	}
	for _, v := range m {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return errors.New("imageops: colour matrix holds " + ftoa(float64(v)))
		}
	}
	w, h := im.Rect.Dx(), im.Rect.Dy()
	for y := 0; y < h; y++ {
		row := im.Pix[y*im.Stride : y*im.Stride+4*w]
		for p := 0; p < len(row); p += 4 {
			r, g, b, a := float32(row[p]), float32(row[p+1]), float32(row[p+2]), float32(row[p+3])
			row[p] = clamp8(m[0]*r + m[1]*g + m[2]*b + m[3]*a + m[4])
			row[p+1] = clamp8(m[5]*r + m[6]*g + m[7]*b + m[8]*a + m[9])
			row[p+2] = clamp8(m[10]*r + m[11]*g + m[12]*b + m[13]*a + m[14])
			row[p+3] = clamp8(m[15]*r + m[16]*g + m[17]*b + m[18]*a + m[19])
		}
	}
	return nil
}
