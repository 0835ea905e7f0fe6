package builtin

import (
	"math"
	"strconv"

	"github.com/kiln-project/kiln/wasmhost/abi"
)

// Quality controller constants.
const (
	// restoreBelow is the p95/target ratio under which the controller
	// restores quality.
	restoreBelow = 0.7
	// restoreStep is how much the level falls per decision when restoring.
	restoreStep = 0.1
	// maxRaise bounds how much the level rises per decision.
	maxRaise = 0.25
	// minRaise is the smallest rise when the target is missed.
	minRaise = 0.05
	// backlogPerSlot is the queue depth per running job above which the
	// controller counts the queue as a backlog.
	backlogPerSlot = 4
	// backlogFrom is the p95/target ratio from which a backlog raises the
	// level before p95 crosses the target.
	backlogFrom = 0.8
	// sizeFrom is the level above which the size shrinks too (steps go first).
	sizeFrom = 0.5
	// minScale is the side scale at level 1.
	minScale = 0.75
)

// Quality is an adaptive controller that keeps the p95 latency under the
// target. Its state is the level (0 = full quality, 1 = the most reduced)
// that the host stores and passes back:
//
//   - p95 above target raises the level by half the relative excess
//     (between 0.05 and 0.25 per decision); a queue deeper than four jobs
//     per running job raises it by 0.05 once p95 is within 20% of the
//     target;
//   - p95 under 70% of the target with no backlog lowers it by 0.1;
//   - steps shrink linearly with the level, down to half the request (not
//     below the tenant's minimum); above level 0.5 the width and height
//     shrink too, to 75% at level 1, rounded down to the size multiple and
//     kept within the tenant's limits;
//   - sampler and profile are left as requested, and nothing ever rises
//     above the request;
//   - parameters the input locks (set explicitly by the request) are
//     never changed, and the reason of any change is given (ABI minor 2).
func Quality(in *abi.QualityInput) (out abi.QualityOutput) {
	req := in.Request
	level := in.Level
	if math.IsNaN(level) || level < 0 {
		level = 0
	}
	if level > 1 {
		level = 1
	}
	why := ""
	if in.TargetP95US > 0 {
		ratio := float64(in.P95US) / float64(in.TargetP95US)
		backlog := in.QueueDepth > backlogPerSlot*(in.Running+1) && ratio >= backlogFrom
		switch {
		case ratio > 1:
			level += math.Min(maxRaise, math.Max(minRaise, (ratio-1)/2))
			why = "recent p95 latency " + secs(in.P95US) + " is over the " + secs(in.TargetP95US) + " target"
		case backlog:
			level += minRaise
			why = "queue backlog of " + strconv.FormatUint(uint64(in.QueueDepth), 10) + " jobs with p95 " + secs(in.P95US) +
				" near the " + secs(in.TargetP95US) + " target"
		case ratio < restoreBelow:
			level -= restoreStep
		}
	}
	level = math.Max(0, math.Min(1, level))
	// Round the state so that native and Wasm builds agree bit for bit
	// after many decisions.
	level = math.Round(level*1e6) / 1e6

	l := &in.Limits
	out = abi.QualityOutput{Params: req, Level: level}
	defer func() {
		abi.RestoreLocked(in, &out)
		if out.Params != req {
			if why == "" {
				why = "load earlier in the latency window"
			}
			out.Reason = why + " (level " + strconv.FormatFloat(level, 'f', 2, 64) + ")"
		}
	}()

	floor := req.Steps / 2
	if floor < l.MinSteps {
		floor = l.MinSteps
	}
	steps := req.Steps
	if steps > floor {
		steps -= uint32(math.Round(level * float64(steps-floor)))
	}
	out.Params.Steps = clampU32(steps, l.MinSteps, l.MaxSteps)

	scale := 1.0
	if level > sizeFrom {
		scale = 1 - (1-minScale)*(level-sizeFrom)/(1-sizeFrom)
	}
	out.Params.Width = side(req.Width, scale, l.MinWidth, l.MaxWidth, l.SizeMultiple)
	out.Params.Height = side(req.Height, scale, l.MinHeight, l.MaxHeight, l.SizeMultiple)
	return out
}

// secs formats microseconds as seconds ("12.5s").
func secs(us uint64) string {
	return strconv.FormatFloat(float64(us)/1e6, 'f', 1, 64) + "s"
}

func clampU32(v, lo, hi uint32) uint32 {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

// side scales v, rounds down to a multiple of mult and keeps it within
// [lo, hi] (rounded inwards to multiples) and at most v; when no multiple
// lies within the limits, v is returned unchanged.
func side(v uint32, scale float64, lo, hi, mult uint32) uint32 {
	if mult == 0 {
		mult = 1
	}
	lo = (lo + mult - 1) / mult * mult
	hi = hi / mult * mult
	if lo > hi {
		return v
	}
	s := uint32(float64(v)*scale) / mult * mult
	top := v / mult * mult
	if top > hi {
		top = hi
	}
	if s > top {
		s = top
	}
	if s < lo {
		s = lo
	}
	return s
}
