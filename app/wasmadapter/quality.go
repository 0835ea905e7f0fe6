package wasmadapter

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/kiln-project/kiln/gateway/api"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

// LevelHalfLife is how fast a kept controller level decays towards full
// quality while no request of its key arrives.
const LevelHalfLife = 60 * time.Second

// Quality is the gateway's QualityPolicy asking the quality policy (the
// tenant's active module, the operator's, or the built-in adaptive
// controller). It keeps the controller level per (tenant, profile, model)
// between calls, decaying it with the time since the last call.
type Quality struct {
	w *Wasm
	// Now is the clock (time.Now).
	Now func() time.Time

	mu    sync.Mutex
	level map[levelKey]kept
}

type levelKey struct{ tenant, profile, model string }

type kept struct {
	level float64
	at    time.Time
}

// Quality returns a quality adapter.
func (w *Wasm) Quality() *Quality {
	return &Quality{w: w, Now: time.Now, level: map[levelKey]kept{}}
}

// Size limits a quality policy works within (the gateway's own bounds;
// the tenant's pixel and step limits are checked again on the answer).
const (
	minSide = 64
	maxSide = 4096
)

// Level returns the controller level kept for a (tenant, profile, model),
// decayed to now.
func (q *Quality) Level(tenant, profile, model string) float64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	k, ok := q.level[levelKey{tenant, profile, model}]
	if !ok {
		return 0
	}
	decayed := k.level * math.Exp2(-q.Now().Sub(k.at).Seconds()/LevelHalfLife.Seconds())
	if decayed < 1e-3 {
		return 0
	}
	return math.Round(decayed*1e6) / 1e6
}

var lockBits = map[string]uint32{"steps": abi.LockSteps, "width": abi.LockWidth, "height": abi.LockHeight,
	"sampler": abi.LockSampler, "profile": abi.LockProfile}

// Input builds the quality input of a request.
func (q *Quality) Input(in api.QualityInput) *abi.QualityInput {
	p := in.Params
	maxSteps := in.Limits.MaxSteps
	if maxSteps < p.Steps {
		maxSteps = p.Steps
	}
	var locked uint32
	for name, on := range in.Locked {
		if on {
			locked |= lockBits[name]
		}
	}
	return &abi.QualityInput{
		NowUS: q.Now().UnixMicro(), Tenant: in.Tenant, QueueDepth: uint32(max(in.QueueDepth, 0)),
		P50US: uint64(max(in.P50.Microseconds(), 0)), P95US: uint64(max(in.P95.Microseconds(), 0)),
		TargetP95US: uint64(max(in.Target.Microseconds(), 0)), Level: q.Level(in.Tenant, p.Profile, p.Model),
		Request: abi.QualityParams{Steps: uint32(p.Steps), Width: uint32(p.Width), Height: uint32(p.Height), Sampler: p.Sampler, Profile: p.Profile},
		Limits: abi.QualityLimits{MinSteps: 1, MaxSteps: uint32(max(maxSteps, 1)), MinWidth: minSide, MaxWidth: maxSide,
			MinHeight: minSide, MaxHeight: maxSide, SizeMultiple: 8},
		Locked: locked, Model: p.Model,
	}
}

// Adjust implements api.QualityPolicy.
func (q *Quality) Adjust(ctx context.Context, in api.QualityInput) (api.QualityResult, error) {
	qi := q.Input(in)
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	out, _ := q.w.Registry.Quality(ctx, in.Tenant, qi)
	abi.RestoreLocked(qi, &out) // also for the native fallback
	q.mu.Lock()
	q.level[levelKey{in.Tenant, in.Params.Profile, in.Params.Model}] = kept{out.Level, q.Now()}
	q.mu.Unlock()
	p := in.Params
	p.Steps, p.Width, p.Height = int(out.Params.Steps), int(out.Params.Width), int(out.Params.Height)
	p.Sampler, p.Profile = out.Params.Sampler, out.Params.Profile
	return api.QualityResult{Params: p, Reason: out.Reason}, nil
}
