package pipeline

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/family"
)

// countingTiles wraps a model, counting tiled decodes; the wrapped model
// stays its owner's.
type countingTiles struct {
	family.Model
	tiled int
}

func (c *countingTiles) DecodeLatentsTiled(ctx context.Context, z []float32, shape [4]int, tile int) ([]float32, [4]int, error) {
	c.tiled++
	return c.Model.(family.TiledDecoder).DecodeLatentsTiled(ctx, z, shape, tile)
}

func (c *countingTiles) Close() error { return nil }

// TestTiledDecodeThreshold checks that images above the threshold decode
// in tiles, with the whole decode's result up to float rounding, and that
// images below it (or tiling switched off) decode whole.
func TestTiledDecodeThreshold(t *testing.T) {
	e := loadEnv(t)
	if _, ok := e.pipe.Model().(family.TiledDecoder); !ok {
		t.Fatal("the SD family does not decode in tiles")
	}
	m := &countingTiles{Model: e.pipe.Model()}
	p, err := New(m)
	if err != nil {
		t.Fatal(err)
	}
	p.SetSchedulerConfig(e.pipe.SchedulerConfig())
	req := editRequest(4)
	whole := generate(t, p, req)
	if m.tiled != 0 {
		t.Fatalf("a 64×64 image decoded in tiles under the default threshold")
	}
	p.SetTiling(64*64-1, 32)
	tiled := generate(t, p, req)
	if m.tiled != 1 {
		t.Fatalf("%d tiled decodes above the threshold, want 1", m.tiled)
	}
	worst := 0.0
	for k := range whole.Pixels {
		worst = max(worst, math.Abs(float64(whole.Pixels[k]-tiled.Pixels[k])))
	}
	if worst > 1e-4 {
		t.Fatalf("tiled decode differs from the whole one by %g", worst)
	}
	p.SetTiling(-1, 32)
	generate(t, p, req)
	if m.tiled != 1 {
		t.Fatal("tiling switched off still tiled")
	}
}

// TestSizeWarnings checks the warning on sizes far from the native one.
func TestSizeWarnings(t *testing.T) {
	e := loadEnv(t)
	nw, nh := e.pipe.DefaultSize()
	f := e.pipe.Factor()
	req := Request{Prompt: "x", Steps: 1, SkipDecode: true, Sampler: "euler"}
	if r := generate(t, e.pipe, req); len(r.Warnings) != 0 {
		t.Fatalf("native size warned: %v", r.Warnings)
	}
	big := req
	big.Width, big.Height = (2*nw)/f*f, nh
	if r := generate(t, e.pipe, big); len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "far above") {
		t.Fatalf("twice the native width: warnings %v", r.Warnings)
	}
	small := req
	small.Width, small.Height = nw, (nh/3)/f*f
	if r := generate(t, e.pipe, small); len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "far below") {
		t.Fatalf("a third of the native height: warnings %v", r.Warnings)
	}
	i2i := big
	i2i.InitImage, i2i.Strength, i2i.Steps = testImage(big.Width, big.Height), 0.5, 2
	if r := generate(t, e.pipe, i2i); len(r.Warnings) != 0 {
		t.Fatalf("img2img warned: %v", r.Warnings)
	}
}
