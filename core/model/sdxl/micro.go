package sdxl

import (
	"context"
	"fmt"

	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/model/unet"
)

// Micro is SDXL's micro-conditioning of one request (family.Micro): sizes
// are (height, width) in pixels and crops (top, left); a zero size means
// the image's size. The refiner uses the aesthetic scores instead of the
// target sizes (zero: DefaultAestheticScore, DefaultNegativeAestheticScore).
type Micro = family.Micro

// ValidateMicro rejects negative or absurd sizes, crops and scores.
func ValidateMicro(mc Micro) error {
	for _, v := range [][2]int{mc.OriginalSize, mc.CropTopLeft, mc.TargetSize, mc.NegativeOriginalSize, mc.NegativeCropTopLeft, mc.NegativeTargetSize} {
		if v[0] < 0 || v[1] < 0 || v[0] > 1<<20 || v[1] > 1<<20 {
			return fmt.Errorf("sdxl: micro-conditioning value %v out of range [0, %d]", v, 1<<20)
		}
	}
	if mc.AestheticScore < 0 || mc.NegativeAestheticScore < 0 || mc.AestheticScore > 100 || mc.NegativeAestheticScore > 100 {
		return fmt.Errorf("sdxl: aesthetic scores %v, %v out of range [0, 100]", mc.AestheticScore, mc.NegativeAestheticScore)
	}
	return nil
}

// TimeIDs returns the time ids of the conditional and the unconditional
// rows for an image of height h and width w, as diffusers builds them. The
// base: original size, crop, target size; txt2img uses the negative values
// only when both negative sizes are given (else the positive ids), img2img
// takes each negative size alone and keeps the positive crop. The refiner:
// original size, crop, aesthetic score, the negative row with the negative
// size (default: the positive), crop and score.
func (m *Model) TimeIDs(mc Micro, h, w int, img2img bool) (pos, neg []float32) {
	or := func(v [2]int, def [2]int) [2]int {
		if v == ([2]int{}) {
			return def
		}
		return v
	}
	img := [2]int{h, w}
	orig, target := or(mc.OriginalSize, img), or(mc.TargetSize, img)
	ids := func(a, b [2]int, last ...float64) []float32 {
		out := []float32{float32(a[0]), float32(a[1]), float32(b[0]), float32(b[1])}
		for _, v := range last {
			out = append(out, float32(v))
		}
		return out
	}
	if m.aesthetics {
		score, negScore := mc.AestheticScore, mc.NegativeAestheticScore
		if score == 0 {
			score = DefaultAestheticScore
		}
		if negScore == 0 {
			negScore = DefaultNegativeAestheticScore
		}
		return ids(orig, mc.CropTopLeft, score), ids(or(mc.NegativeOriginalSize, orig), mc.NegativeCropTopLeft, negScore)
	}
	pos = ids(orig, mc.CropTopLeft, float64(target[0]), float64(target[1]))
	switch {
	case img2img:
		nt := or(mc.NegativeTargetSize, target)
		neg = ids(or(mc.NegativeOriginalSize, orig), mc.CropTopLeft, float64(nt[0]), float64(nt[1]))
	case mc.NegativeOriginalSize != ([2]int{}) && mc.NegativeTargetSize != ([2]int{}):
		nt := mc.NegativeTargetSize
		neg = ids(mc.NegativeOriginalSize, mc.NegativeCropTopLeft, float64(nt[0]), float64(nt[1]))
	default:
		neg = append([]float32(nil), pos...)
	}
	return pos, neg
}

// Rows is the conditioning of a batch of UNet rows: per row, its text
// context (ctxLen × ContextDim), pooled embedding and time ids, each
// concatenated over the rows.
type Rows struct {
	Context []float32
	CtxLen  int
	Pooled  []float32
	TimeIDs []float32
}

// Append adds n rows with conditioning c and time ids ids.
func (r *Rows) Append(c Conditioning, ids []float32, n int) error {
	if r.CtxLen != 0 && c.Length != r.CtxLen {
		return fmt.Errorf("sdxl: rows of context length %d and %d in one batch", r.CtxLen, c.Length)
	}
	r.CtxLen = c.Length
	for range n {
		r.Context = append(r.Context, c.Hidden...)
		r.Pooled = append(r.Pooled, c.Pooled...)
		r.TimeIDs = append(r.TimeIDs, ids...)
	}
	return nil
}

// Predict runs the UNet over x (rows, C, H, W) at per-row timesteps ts
// with the rows' conditioning.
func (m *Model) Predict(ctx context.Context, x []float32, shape [4]int, ts []float32, r *Rows) ([]float32, error) {
	return m.UNet.ForwardAdded(ctx, x, shape, ts, r.Context, r.CtxLen, &unet.Added{TextEmbeds: r.Pooled, TimeIDs: r.TimeIDs})
}
