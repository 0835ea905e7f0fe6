package registry

import (
	"context"
	"time"

	"github.com/kiln-project/kiln/wasmhost"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

// resolved is a slot's active module (nil = none) and shadow candidate.
type resolved struct {
	active *wasmhost.Module
	shadow *wasmhost.Module
	stats  *shadowStats
}

// resolve finds a slot's modules. Errors (an unreadable store, a module
// that no longer loads) are logged and leave the slot to the default:
// the hot path never fails.
func (r *Registry) resolve(ctx context.Context, sk slotKey) resolved {
	var out resolved
	st, err := r.state(ctx, sk)
	if err != nil {
		r.cfg.Logger.Warn("wasm registry: slot state unavailable, using the built-in default", "kind", sk.kind, "scope", sk.scope, "error", err)
		return out
	}
	if st.Active != nil {
		m, err := r.module(ctx, sk.scope, sk.kind, *st.Active)
		if err != nil {
			r.cfg.Logger.Warn("wasm registry: active module unavailable, using the built-in default", "module", st.Active.String(), "error", err)
		}
		out.active = m
	}
	if st.Shadow != nil {
		if m, err := r.module(ctx, sk.scope, sk.kind, *st.Shadow); err == nil {
			out.shadow = m
			r.smu.Lock()
			s := r.shadows[sk]
			if s == nil || s.candidate != *st.Shadow {
				s = newShadowStats(*st.Shadow, r.cfg.Now())
				r.shadows[sk] = s
			}
			r.smu.Unlock()
			out.stats = s
		}
	}
	return out
}

// shadow runs call in the background when a slot has a candidate,
// bounded by ShadowConcurrency.
func (r *Registry) shadow(res resolved, activeDur time.Duration, call func(ctx context.Context, m *wasmhost.Module) (wasmhost.Outcome, bool, any), active any) {
	if res.shadow == nil || res.stats == nil {
		return
	}
	select {
	case r.shadowSem <- struct{}{}:
	default:
		res.stats.skip()
		return
	}
	r.shadowWG.Add(1)
	go func() {
		defer r.shadowWG.Done()
		defer func() { <-r.shadowSem }()
		o, same, out := call(context.Background(), res.shadow)
		res.stats.record(activeDur, o, same, r.cfg.Now(), active, out)
	}()
}

// WaitShadows waits for the shadow calls in flight.
func (r *Registry) WaitShadows() { r.shadowWG.Wait() }

// Batching decides which queued jobs to run as one batch: the operator's
// active batching policy, else the built-in module, else (on any
// failure) the native default.
func (r *Registry) Batching(ctx context.Context, in *abi.BatchingInput) (abi.BatchingOutput, wasmhost.Outcome) {
	res := r.resolve(ctx, slotKey{kind: KindBatching})
	m := res.active
	if m == nil {
		m = r.builtinPolicies
	}
	out, o := m.Batching(ctx, in)
	if res.shadow != nil {
		cp, err := abi.DecodeBatchingInput(abi.EncodeBatchingInput(nil, in))
		act := abi.BatchingOutput{Wait: out.Wait, WaitUS: out.WaitUS, Jobs: append([]uint32(nil), out.Jobs...)}
		if err == nil {
			r.shadow(res, o.Duration, func(ctx context.Context, sm *wasmhost.Module) (wasmhost.Outcome, bool, any) {
				sout, so := sm.CallBatching(ctx, &cp)
				return so, abi.SameBatching(&act, &sout), sout
			}, act)
		}
	}
	return out, o
}

// Eviction chooses the models to evict: the operator's active eviction
// policy, else the built-in module, else the native default.
func (r *Registry) Eviction(ctx context.Context, in *abi.EvictionInput) (abi.EvictionOutput, wasmhost.Outcome) {
	res := r.resolve(ctx, slotKey{kind: KindEviction})
	m := res.active
	if m == nil {
		m = r.builtinPolicies
	}
	out, o := m.Eviction(ctx, in)
	if res.shadow != nil {
		cp, err := abi.DecodeEvictionInput(abi.EncodeEvictionInput(nil, in))
		act := abi.EvictionOutput{Victims: append([]abi.Victim(nil), out.Victims...)}
		if err == nil {
			r.shadow(res, o.Duration, func(ctx context.Context, sm *wasmhost.Module) (wasmhost.Outcome, bool, any) {
				sout, so := sm.CallEviction(ctx, &cp)
				return so, abi.SameEviction(&act, &sout), sout
			}, act)
		}
	}
	return out, o
}

// Quality adjusts a request of tenant: the tenant's active quality
// policy, else the operator's, else the built-in module, else the native
// default.
func (r *Registry) Quality(ctx context.Context, tenant string, in *abi.QualityInput) (abi.QualityOutput, wasmhost.Outcome) {
	res := r.resolve(ctx, slotKey{scope: tenant, kind: KindQuality})
	if res.active == nil && res.shadow == nil && tenant != "" {
		res = r.resolve(ctx, slotKey{kind: KindQuality})
	}
	m := res.active
	if m == nil {
		m = r.builtinPolicies
	}
	out, o := m.Quality(ctx, in)
	if res.shadow != nil {
		cp, err := abi.DecodeQualityInput(abi.EncodeQualityInput(nil, in))
		act := out
		if err == nil {
			r.shadow(res, o.Duration, func(ctx context.Context, sm *wasmhost.Module) (wasmhost.Outcome, bool, any) {
				sout, so := sm.CallQuality(ctx, &cp)
				return so, abi.SameQuality(&act, &sout), sout
			}, act)
		}
	}
	return out, o
}
