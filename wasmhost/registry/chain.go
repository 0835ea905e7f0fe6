package registry

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/kiln-project/kiln/wasmhost"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

// NodeSpec is one node of a job's chain, as jobs name them:
//
//	"nodes": {"pre": [{"name": "style", "params": {"preset": "anime"}}],
//	          "post": [{"name": "resize", "params": {"width": "256"}}, {"name": "watermark"}]}
type NodeSpec struct {
	Name   string            `json:"name"`
	Params map[string]string `json:"params,omitempty"`
	// OnFailure says what happens when the node's module fails (trap,
	// timeout, invalid answer...): "skip" (the default) lets the native
	// default answer (the built-in node of that name, or the input
	// unchanged); "reject" fails the job.
	OnFailure string `json:"on_failure,omitempty"`
}

// Chain is a job's pre- and post-processing nodes.
type Chain struct {
	Pre  []NodeSpec `json:"pre,omitempty"`
	Post []NodeSpec `json:"post,omitempty"`
}

// Empty reports whether the chain names no node.
func (c Chain) Empty() bool { return len(c.Pre) == 0 && len(c.Post) == 0 }

// Chain limits.
const (
	MaxChainNodes  = 16
	MaxNodeParams  = 32
	MaxParamValue  = 4 << 10
	onFailureSkip  = "skip"
	onFailureBlock = "reject"
)

// Rejection is the error of a chain a node rejected (or, with
// on_failure "reject", failed in).
type Rejection struct {
	Node   string
	Reason string
}

// Error names the node and its reason.
func (e *Rejection) Error() string { return "node " + e.Node + ": " + e.Reason }

// nodeModule finds the module that runs node name for tenant: the
// built-in module for built-in names, else the tenant's active version.
func (r *Registry) nodeModule(ctx context.Context, tenant, name string) (*wasmhost.Module, error) {
	if _, ok := r.cfg.Host.Config().Natives.Hook(name); ok {
		return r.builtinNodes, nil
	}
	if err := CheckName(name); err != nil {
		return nil, err
	}
	res := r.resolve(ctx, slotKey{tenant, KindNode, name})
	if res.active == nil {
		return nil, fmt.Errorf("registry: node %q: %w", name, ErrNotFound)
	}
	return res.active, nil
}

// NodeHooks returns the hooks node name implements for tenant.
func (r *Registry) NodeHooks(ctx context.Context, tenant, name string) ([]abi.Hook, error) {
	if h, ok := r.cfg.Host.Config().Natives.Hook(name); ok {
		return []abi.Hook{h}, nil
	}
	m, err := r.nodeModule(ctx, tenant, name)
	if err != nil {
		return nil, err
	}
	return m.Info().Hooks, nil
}

func sortedParams(p map[string]string) []abi.Param {
	out := make([]abi.Param, 0, len(p))
	for k, v := range p {
		out = append(out, abi.Param{Key: k, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// CheckChain validates a job's chain before it is queued: known nodes of
// the right kind, sane parameters (checked fully for built-in nodes) and
// on_failure values. Errors wrap ErrInvalid or ErrNotFound.
func (r *Registry) CheckChain(ctx context.Context, tenant string, c Chain) error {
	if len(c.Pre)+len(c.Post) > MaxChainNodes {
		return fmt.Errorf("%w: at most %d nodes per job", ErrInvalid, MaxChainNodes)
	}
	for _, part := range []struct {
		specs []NodeSpec
		hook  abi.Hook
		where string
	}{{c.Pre, abi.HookNodePre, "pre"}, {c.Post, abi.HookNodePost, "post"}} {
		for i, s := range part.specs {
			field := fmt.Sprintf("nodes.%s[%d]", part.where, i)
			if s.OnFailure != "" && s.OnFailure != onFailureSkip && s.OnFailure != onFailureBlock {
				return fmt.Errorf("%w: %s.on_failure: %q is not skip or reject", ErrInvalid, field, s.OnFailure)
			}
			if len(s.Params) > MaxNodeParams {
				return fmt.Errorf("%w: %s.params: at most %d", ErrInvalid, field, MaxNodeParams)
			}
			for k, v := range s.Params {
				if len(k) == 0 || len(k) > abi.MaxStringBytes || len(v) > MaxParamValue {
					return fmt.Errorf("%w: %s.params: key or value too long", ErrInvalid, field)
				}
			}
			hooks, err := r.NodeHooks(ctx, tenant, s.Name)
			if err != nil {
				if errors.Is(err, ErrNotFound) {
					return fmt.Errorf("%s: unknown node %q: %w", field, s.Name, ErrNotFound)
				}
				return fmt.Errorf("%s: %w", field, err)
			}
			if !hasHook(hooks, part.hook) {
				return fmt.Errorf("%w: %s: node %q is not a %s-processing node", ErrInvalid, field, s.Name, part.where)
			}
			if _, ok := r.cfg.Host.Config().Natives.Hook(s.Name); ok {
				if err := r.cfg.Host.Config().Natives.CheckParams(s.Name, sortedParams(s.Params)); err != nil {
					return fmt.Errorf("%w: %s: %v", ErrInvalid, field, err)
				}
			}
		}
	}
	return nil
}

// RunPre runs a pre-processing chain over a request and returns the
// rewritten request, or a *Rejection.
func (r *Registry) RunPre(ctx context.Context, tenant string, chain []NodeSpec, req abi.PreInput) (abi.PreInput, error) {
	req.Tenant = tenant
	for _, s := range chain {
		m, err := r.nodeModule(ctx, tenant, s.Name)
		if err != nil {
			return req, &Rejection{Node: s.Name, Reason: err.Error()}
		}
		in := req
		in.Node, in.Params = s.Name, sortedParams(s.Params)
		out, o := m.NodePre(ctx, &in)
		if !o.OK() && s.OnFailure == onFailureBlock {
			return req, &Rejection{Node: s.Name, Reason: "the node failed (" + string(o.Result) + ")"}
		}
		if out.Reject {
			return req, &Rejection{Node: s.Name, Reason: out.Reason}
		}
		req.Prompt, req.NegativePrompt = out.Prompt, out.NegativePrompt
		req.Width, req.Height, req.Steps = out.Width, out.Height, out.Steps
		req.Guidance, req.Sampler, req.Seed = out.Guidance, out.Sampler, out.Seed
	}
	return req, nil
}

// RunPost runs a post-processing chain over an image and returns the
// result, or a *Rejection. The input image's pixels may be reused.
func (r *Registry) RunPost(ctx context.Context, tenant string, chain []NodeSpec, in abi.PostInput) (abi.Image, error) {
	in.Tenant = tenant
	for _, s := range chain {
		m, err := r.nodeModule(ctx, tenant, s.Name)
		if err != nil {
			return abi.Image{}, &Rejection{Node: s.Name, Reason: err.Error()}
		}
		step := in
		step.Node, step.Params = s.Name, sortedParams(s.Params)
		out, o := m.NodePost(ctx, &step)
		if !o.OK() && s.OnFailure == onFailureBlock {
			return abi.Image{}, &Rejection{Node: s.Name, Reason: "the node failed (" + string(o.Result) + ")"}
		}
		if out.Reject {
			return abi.Image{}, &Rejection{Node: s.Name, Reason: out.Reason}
		}
		in.Image = out.Image
	}
	return in.Image, nil
}

// Pool runs node chains (or any CPU work) on a bounded set of
// goroutines, so that post-processing overlaps the next GPU batch
// without oversubscribing the CPU.
type Pool struct {
	sem chan struct{}
}

// NewPool returns a pool running at most n tasks at once (n ≥ 1).
func NewPool(n int) *Pool {
	if n < 1 {
		n = 1
	}
	return &Pool{sem: make(chan struct{}, n)}
}

// Go runs fn on the pool, waiting for a free slot; it returns ctx's error
// without running fn if ctx ends first.
func (p *Pool) Go(ctx context.Context, fn func()) error {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	go func() {
		defer func() { <-p.sem }()
		fn()
	}()
	return nil
}
