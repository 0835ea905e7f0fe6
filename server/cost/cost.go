// Package cost estimates what a job costs to run: its work in
// megapixel-steps (images × width × height × steps, img2img scaled by its
// strength) and, given a worker's measured speed in megapixel-steps per
// second, how long it will take. The gateway's cost guard refuses jobs a
// CPU worker could not finish in time and suggests a smaller request; the
// fair queue charges tenants by the same work.
package cost

import (
	"math"
	"time"

	"github.com/kiln-project/kiln/server/jobs"
)

// Work returns a job's work in megapixel-steps.
func Work(p *jobs.Params) float64 {
	steps := float64(p.Steps)
	if p.InitImage != "" && p.Strength > 0 && p.Strength < 1 {
		steps = math.Ceil(steps * p.Strength)
	}
	work := float64(max(p.N, 1)) * float64(p.Width) * float64(p.Height) * steps / 1e6
	if h := p.Hires; h != nil {
		// the second pass, at the hires size
		w, ht := h.Size(p.Width, p.Height)
		s := h.Steps
		if s == 0 {
			s = p.Steps
		}
		work += float64(max(p.N, 1)) * float64(w) * float64(ht) * math.Ceil(float64(s)*h.Denoise) / 1e6
	}
	return work
}

// Seconds is the time work takes at speed (megapixel-steps per second);
// zero when the speed is unknown.
func Seconds(work, speed float64) float64 {
	if speed <= 0 || math.IsNaN(speed) || math.IsInf(speed, 0) {
		return 0
	}
	return work / speed
}

// Estimate is Seconds as a duration (saturating at about 290 years).
func Estimate(work, speed float64) time.Duration {
	return time.Duration(min(Seconds(work, speed), float64(math.MaxInt64)/1e9) * float64(time.Second))
}

// Suggestion is a smaller request that fits the limit.
type Suggestion struct {
	Width  int `json:"width"`
	Height int `json:"height"`
	Steps  int `json:"steps"`
	N      int `json:"n"`
	// EstimateS is the suggestion's estimated run time in seconds.
	EstimateS float64 `json:"estimate_s"`
}

// Suggest shrinks a job until its estimate at speed fits limit: first the
// number of images, then the size (keeping the aspect ratio, sides
// multiples of 8 and at least minSide), then the steps (at least 1). ok is
// false when even the smallest request does not fit.
func Suggest(p jobs.Params, speed float64, limit time.Duration, minSide int) (Suggestion, bool) {
	lim := limit.Seconds()
	est := func() float64 { return Seconds(Work(&p), speed) }
	fits := func() bool { return est() <= lim }
	if p.N > 1 && !fits() {
		p.N = max(1, min(p.N-1, int(float64(p.N)*lim/est())))
		for p.N > 1 && !fits() {
			p.N--
		}
	}
	for !fits() && (p.Width > minSide || p.Height > minSide) {
		f := math.Sqrt(lim / est())
		w, h := side(p.Width, f, minSide), side(p.Height, f, minSide)
		if w == p.Width && h == p.Height { // rounding kept the size: step down
			w, h = max(minSide, p.Width-8), max(minSide, p.Height-8)
		}
		p.Width, p.Height = w, h
	}
	for !fits() && p.Steps > 1 {
		p.Steps = max(1, min(p.Steps-1, int(float64(p.Steps)*lim/est())))
	}
	return Suggestion{Width: p.Width, Height: p.Height, Steps: p.Steps, N: p.N, EstimateS: est()}, fits()
}

// side scales v by f, rounding down to a multiple of 8, not below lo.
func side(v int, f float64, lo int) int {
	s := int(float64(v)*f) / 8 * 8
	return max(lo, min(s, v))
}
