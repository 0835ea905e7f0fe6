package api

import (
	"context"
	"time"

	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/gateway/validate"
	"github.com/kiln-project/kiln/server/jobs"
)

// QualityWindow is how far back adaptive quality looks at job latencies
// (samples lose half their weight every third of it).
const QualityWindow = 60 * time.Second

// QualityAdaptive is the value of a tenant's or profile's `quality` that
// turns adaptive quality on.
const QualityAdaptive = "adaptive"

func qualityKey(tenant, profile, model string) string {
	return tenant + "\x00" + profile + "\x00" + model
}

// lockedParams names the parameters a request set explicitly, which
// adaptive quality keeps unless the request says allow_adjust.
func lockedParams(r *validate.JobRequest) map[string]bool {
	locked := map[string]bool{}
	if r.AllowAdjust {
		return locked
	}
	for name, set := range map[string]bool{"steps": r.Steps != nil, "width": r.Width != nil, "height": r.Height != nil,
		"sampler": r.Sampler != "", "profile": r.Profile != ""} {
		if set {
			locked[name] = true
		}
	}
	return locked
}

// adaptive reports whether the tenant or the profile opted in.
func (s *Server) adaptive(p auth.Principal, profile string) bool {
	if p.Quality == QualityAdaptive {
		return true
	}
	pr, ok := s.validator.Profiles()[profile]
	return ok && pr.Quality == QualityAdaptive
}

// adjustQuality asks the quality policy about a request of a tenant or
// profile that opted in, keeps the locked parameters, and returns the
// parameters to queue and the adjustments made.
func (s *Server) adjustQuality(ctx context.Context, p auth.Principal, params jobs.Params, locked map[string]bool) (jobs.Params, []jobs.Adjustment) {
	if !s.adaptive(p, params.Profile) {
		return params, nil
	}
	q, _ := s.window.Quantiles(qualityKey(p.Tenant, params.Profile, params.Model), 0.5, 0.95)
	in := QualityInput{Tenant: p.Tenant, Params: params, Limits: p.Quota, P50: q[0], P95: q[1], Locked: locked}
	if pr, ok := s.validator.Profiles()[params.Profile]; ok {
		in.Target = pr.LatencyTarget.D()
	}
	if waiting, _, err := s.o.Store.QueueDepth(ctx); err == nil {
		in.QueueDepth = waiting
	}
	res, err := s.o.Quality.Adjust(ctx, in)
	if err != nil {
		return params, nil
	}
	out := res.Params
	out.Prompt, out.NegativePrompt, out.Seed, out.Model = params.Prompt, params.NegativePrompt, params.Seed, params.Model
	// Whatever the policy answered, locked parameters stay.
	for name, keep := range map[string]func(){"steps": func() { out.Steps = params.Steps }, "width": func() { out.Width = params.Width },
		"height": func() { out.Height = params.Height }, "sampler": func() { out.Sampler = params.Sampler },
		"profile": func() { out.Profile = params.Profile }} {
		if locked[name] {
			keep()
		}
	}
	if s.validator.CheckLimits(p, out) != nil {
		return params, nil
	}
	var adj []jobs.Adjustment
	add := func(field string, from, to any) {
		if from != to {
			adj = append(adj, jobs.Adjustment{Field: field, From: from, To: to, Reason: res.Reason})
			s.m.adjusted.With(field).Inc()
		}
	}
	add("steps", params.Steps, out.Steps)
	add("width", params.Width, out.Width)
	add("height", params.Height, out.Height)
	add("sampler", params.Sampler, out.Sampler)
	add("profile", params.Profile, out.Profile)
	return out, adj
}
