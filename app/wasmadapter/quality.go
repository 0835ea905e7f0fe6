package wasmadapter

import (
	"context"
	"sync"
	"time"

	"github.com/kiln-project/kiln/gateway/api"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

// Quality is the gateway's QualityPolicy asking the quality policy (the
// tenant's active module, the operator's, or the built-in adaptive
// controller). It keeps each tenant's controller level between calls.
type Quality struct {
	w *Wasm
	// Now is the clock (time.Now).
	Now func() time.Time

	mu    sync.Mutex
	level map[string]float64
}

// Quality returns a quality adapter.
func (w *Wasm) Quality() *Quality {
	return &Quality{w: w, Now: time.Now, level: map[string]float64{}}
}

// Size limits a quality policy works within (the gateway's own bounds;
// the tenant's pixel and step limits are checked again on the answer).
const (
	minSide = 64
	maxSide = 4096
)

// Level returns the controller level kept for tenant.
func (q *Quality) Level(tenant string) float64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.level[tenant]
}

// Input builds the quality input of a request.
func (q *Quality) Input(in api.QualityInput) *abi.QualityInput {
	p := in.Params
	maxSteps := in.Limits.MaxSteps
	if maxSteps < p.Steps {
		maxSteps = p.Steps
	}
	return &abi.QualityInput{
		NowUS: q.Now().UnixMicro(), Tenant: in.Tenant, QueueDepth: uint32(max(in.QueueDepth, 0)),
		P50US: uint64(max(in.P50.Microseconds(), 0)), P95US: uint64(max(in.P95.Microseconds(), 0)),
		TargetP95US: uint64(max(in.Target.Microseconds(), 0)), Level: q.Level(in.Tenant),
		Request: abi.QualityParams{Steps: uint32(p.Steps), Width: uint32(p.Width), Height: uint32(p.Height), Sampler: p.Sampler, Profile: p.Profile},
		Limits: abi.QualityLimits{MinSteps: 1, MaxSteps: uint32(max(maxSteps, 1)), MinWidth: minSide, MaxWidth: maxSide,
			MinHeight: minSide, MaxHeight: maxSide, SizeMultiple: 8},
	}
}

// Adjust implements api.QualityPolicy.
func (q *Quality) Adjust(ctx context.Context, in api.QualityInput) (jobs.Params, error) {
	qi := q.Input(in)
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	out, _ := q.w.Registry.Quality(ctx, in.Tenant, qi)
	q.mu.Lock()
	q.level[in.Tenant] = out.Level
	q.mu.Unlock()
	p := in.Params
	p.Steps, p.Width, p.Height = int(out.Params.Steps), int(out.Params.Width), int(out.Params.Height)
	p.Sampler, p.Profile = out.Params.Sampler, out.Params.Profile
	return p, nil
}
