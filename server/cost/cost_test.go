package cost

import (
	"testing"
	"time"

	"github.com/kiln-project/kiln/server/jobs"
)

func TestWorkAndEstimate(t *testing.T) {
	p := jobs.Params{Width: 1000, Height: 500, Steps: 20, N: 2}
	if w := Work(&p); w != 20 {
		t.Fatalf("work %v, want 20 megapixel-steps", w)
	}
	p.InitImage, p.Strength = "x", 0.5
	if w := Work(&p); w != 10 {
		t.Fatalf("img2img work %v, want 10", w)
	}
	// hires: 2 × 1000×500 × 20 + 2 × 2000×1000 × ceil(10 × 0.5)
	h := jobs.Params{Width: 1000, Height: 500, Steps: 20, N: 2, Hires: &jobs.Hires{Scale: 2, Steps: 10, Denoise: 0.5}}
	if w := Work(&h); w != 20+20 {
		t.Fatalf("hires work %v, want 40", w)
	}
	h.Hires = &jobs.Hires{Width: 2000, Denoise: 0.25}
	if w := Work(&h); w != 20+2*2*5 {
		t.Fatalf("hires work %v, want 40 (size from the width, the job's steps)", w)
	}
	if d := Estimate(20, 0.5); d != 40*time.Second {
		t.Fatalf("estimate %v", d)
	}
	if Estimate(20, 0) != 0 {
		t.Fatal("unknown speed must give no estimate")
	}
}

func TestSuggestFits(t *testing.T) {
	// 1024² × 30 steps × 2 images at 0.1 MP·steps/s is ~629 s.
	p := jobs.Params{Width: 1024, Height: 768, Steps: 30, N: 2}
	s, ok := Suggest(p, 0.1, 2*time.Minute, 64)
	if !ok || s.EstimateS > 120 || s.N != 1 || s.Width%8 != 0 || s.Height%8 != 0 || s.Width > 1024 || s.Steps != 30 {
		t.Fatalf("suggestion %+v ok %v", s, ok)
	}
	// The aspect ratio survives roughly.
	if r := float64(s.Width) / float64(s.Height); r < 1.2 || r > 1.45 {
		t.Fatalf("aspect %v of %+v", r, s)
	}
	// Too slow for anything: steps fall too, and it says so when nothing fits.
	if s, ok := Suggest(p, 1e-9, time.Second, 64); ok || s.Steps != 1 || s.Width != 64 {
		t.Fatalf("hopeless: %+v %v", s, ok)
	}
}
