package sdengine

import (
	"context"
	"errors"
	"fmt"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/core/quant"
	"github.com/kiln-project/kiln/core/sequential"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/worker"
)

// SetMemory gives the engine its device's memory manager: a model whose
// weights and activations do not fit the budget together is then loaded
// to run sequentially (one stage's components on the device at a time),
// and out-of-memory recovery may switch a model to it.
func (e *Engine) SetMemory(m *memory.Manager) { e.mem = m }

// LoadsLarger reports that the engine fits models larger than its budget
// itself (modelcache.Cache.SetLoadsLarger): on a backend that groups
// weights, by sequential loading.
func (e *Engine) LoadsLarger() bool {
	_, ok := e.be.(backend.WeightGrouper)
	return ok && e.mem != nil
}

// SetWeightPrecision stores the denoiser's linear and conv weights of
// models loaded later in 8 bits ("int8", "fp8"; "", "fp16", "bf16",
// "fp32": as they are). Only backends without weight groups (the CPU)
// take it so far; on the GPU it is refused until a device dequantising
// kernel exists.
func (e *Engine) SetWeightPrecision(p string) error {
	f, err := quant.Parse(p)
	if err != nil {
		return err
	}
	if _, grouped := e.be.(backend.WeightGrouper); grouped && f != quant.None {
		return fmt.Errorf("sdengine: %s weights are not supported on %s yet (no device dequantising kernel)", f, e.device)
	}
	e.weights = f
	return nil
}

// stageOf is the stage of the component of that kind.
func stageOf(comps []family.Component, kind string) (sequential.Stage, bool) {
	for _, c := range comps {
		if c.Kind == kind {
			return sequential.StageOf(c), true
		}
	}
	return 0, false
}

// loadPlan is how a model is loaded to fit the budget.
type loadPlan struct {
	// Sequential loads the components one stage at a time.
	Sequential bool
	// Reason says why, in words ("" when the model fits whole).
	Reason string
}

// plan decides how the model fits: whole when its weights and the
// activations of one image at its native size fit the budget, else
// sequentially (the largest stage's weights and the activations).
func (e *Engine) plan(m catalog.Model, def family.Defaults, comps []memory.Component) loadPlan {
	if !e.LoadsLarger() {
		return loadPlan{}
	}
	var total int64
	for _, c := range comps {
		total += c.Bytes
	}
	act, _ := e.mem.ActivationBytes(memory.Batch{Model: m.Name, Images: 1, Width: def.Width, Height: def.Height})
	if budget := e.mem.Budget(); total+act > budget {
		return loadPlan{Sequential: true, Reason: fmt.Sprintf("weights %s + activations %s of one %d×%d image exceed the budget %s",
			human(total), human(act), def.Width, def.Height, human(budget))}
	}
	return loadPlan{}
}

// build builds the checkpoint's networks: on a backend that groups
// weights, each component into its own weight group when the family
// builds components on their own views (a sequential.Model, whose
// stages can take turns on the device), else all into one group. While
// building a sequential plan, each component leaves for host memory as
// the next one begins, so the device never holds more than one.
func (e *Engine) build(cp family.Checkpoint, comps []family.Component, plan loadPlan) (family.Model, backend.WeightGroup, *sequential.Model, error) {
	g, ok := e.be.(backend.WeightGrouper)
	if !ok {
		if pb, ok := cp.(family.PartBuilder); ok && e.weights != quant.None {
			// 8-bit denoiser weights (dequantised on the host per product:
			// backends without weight groups only, i.e. the CPU).
			qb := quant.Wrap(e.be, e.weights)
			md, err := pb.BuildParts(func(kind string) backend.Backend {
				if s, ok := stageOf(comps, kind); ok && s == sequential.Denoiser {
					return qb
				}
				return e.be
			})
			return md, nil, nil, err
		}
		md, err := cp.Build(e.be)
		return md, nil, nil, err
	}
	pb, ok := cp.(family.PartBuilder)
	if !ok {
		be, group := g.Grouped()
		md, err := cp.Build(be)
		if err != nil {
			group.Close()
			return nil, nil, nil, err
		}
		return md, group, nil, nil
	}
	stage := map[string]sequential.Stage{}
	for _, c := range comps {
		stage[c.Kind] = sequential.StageOf(c)
	}
	views := map[string]backend.Backend{}
	var parts []sequential.Part
	var offErr error
	closeAll := func() {
		for _, p := range parts {
			p.Group.Close()
		}
	}
	md, err := pb.BuildParts(func(kind string) backend.Backend {
		if v, ok := views[kind]; ok {
			return v
		}
		if plan.Sequential {
			for _, p := range parts {
				if err := p.Group.Offload(); err != nil && offErr == nil {
					offErr = fmt.Errorf("offloading %s while loading sequentially: %w", p.Kind, err)
				}
			}
		}
		v, grp := g.Grouped()
		views[kind] = v
		parts = append(parts, sequential.Part{Kind: kind, Stage: stage[kind], Group: grp})
		return v
	})
	if err == nil {
		err = offErr
	}
	if err != nil {
		if md != nil {
			md.Close()
		}
		closeAll()
		return nil, nil, nil, err
	}
	seq, err := sequential.New(md, parts)
	if err == nil && plan.Sequential {
		err = seq.SetOn(true)
	}
	if err != nil {
		md.Close()
		closeAll()
		return nil, nil, nil, err
	}
	return md, seq.Group(), seq, nil
}

// Sequential reports whether the model runs sequentially (one stage's
// components on the device at a time).
func (m *Model) Sequential() bool { return m.seq != nil && m.seq.On() }

// LoadReason says why the model was loaded sequentially ("" when it was
// not).
func (m *Model) LoadReason() string { return m.plan.Reason }

// SequentialStats returns what sequential loading did (zero when the
// model never ran sequentially).
func (m *Model) SequentialStats() sequential.Stats {
	if m.seq == nil {
		return sequential.Stats{}
	}
	return m.seq.Stats()
}

var errNoStages = errors.New("sdengine: the model's components share one weight group: it cannot run sequentially")

// goSequential is the last recovery step before a job fails for memory:
// the model switches to sequential loading.
func (m *Model) goSequential(context.Context) error {
	if m.seq == nil {
		return errNoStages
	}
	return m.seq.SetOn(true)
}

// SetFreeOthers implements worker.MemoryRecoverer: free is the recovery
// step that moves the device's other models off it.
func (m *Model) SetFreeOthers(free func(context.Context) error) {
	rec := memory.Recovery{FreeOthers: free}
	if m.seq != nil {
		rec.Sequential = m.goSequential
	}
	m.p.SetMemoryRecovery(rec)
}

var _ worker.MemoryRecoverer = (*Model)(nil)

// stageBytes is the largest stage's share of comps (what a sequential
// model holds on the device at most), and the components of that stage.
func stageBytes(comps []memory.Component, stages map[string]sequential.Stage) (int64, []memory.Component) {
	sum := map[sequential.Stage]int64{}
	for _, c := range comps {
		sum[stages[c.Kind]] += c.Bytes
	}
	best := sequential.Denoiser
	for s, n := range sum {
		if n > sum[best] {
			best = s
		}
	}
	var out []memory.Component
	for _, c := range comps {
		if stages[c.Kind] == best {
			out = append(out, c)
		}
	}
	return sum[best], out
}

// human writes a byte count in binary units.
func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}
