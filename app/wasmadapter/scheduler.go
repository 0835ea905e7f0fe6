package wasmadapter

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/kiln-project/kiln/worker"
)

// SchedulerOptions configure the batching adapter.
type SchedulerOptions struct {
	// MaxBatch caps the images of one batch (the hardware profile's
	// max_batch; default 1).
	MaxBatch int
	// MaxWait bounds how long a job may wait for a batch to fill (200 ms;
	// at most 10 s, the worker's bound).
	MaxWait time.Duration
	// StepLatency, when set, overrides the step latency per batch size
	// that the worker measures and passes with each decision (tests,
	// operators who know their hardware better than a few samples).
	StepLatency func() []abi.StepLatency
	// Weight returns a tenant's fairness weight (default: the weight its
	// pending jobs carry, set by the gateway from the tenant, else 1).
	Weight func(tenant string) float64
	// FairnessHalfLife is the half-life of the served-images counts that
	// weighted fairness compares (1 min).
	FairnessHalfLife time.Duration
	// Timeout bounds one decision (1 s).
	Timeout time.Duration
	// Memory, when set, is the device's memory manager: it fills
	// FreeMemBytes and each job's MemBytes (its activation estimate), so
	// that the policy forms batches that fit.
	Memory *memory.Manager
}

// Scheduler is the worker's Scheduler asking the batching policy (the
// operator's active module, or the built-in one) which pending jobs to
// run together. It keeps the recent images served per tenant for the
// policy's fairness.
type Scheduler struct {
	w *Wasm
	o SchedulerOptions

	mu     sync.Mutex
	served map[string]float64
	last   time.Time
}

// Scheduler returns a batching adapter.
func (w *Wasm) Scheduler(o SchedulerOptions) *Scheduler {
	if o.MaxBatch < 1 {
		o.MaxBatch = 1
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 200 * time.Millisecond
	}
	if o.MaxWait > 10*time.Second {
		o.MaxWait = 10 * time.Second
	}
	if o.FairnessHalfLife <= 0 {
		o.FairnessHalfLife = time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	return &Scheduler{w: w, o: o, served: map[string]float64{}}
}

// priority maps the job priorities onto the ABI's integers (higher first).
func priority(p string) int32 {
	switch p {
	case jobs.PriorityHigh:
		return 2
	case jobs.PriorityLow:
		return 0
	}
	return 1
}

// CompatRules are the request fields that must match for jobs to share a batch.
func CompatRules() []string {
	return []string{"model", "width", "height", "steps", "sampler", "guidance", "clip_skip", "init_image"}
}

// CompatKey is the key of CompatRules for a job.
func CompatKey(p *jobs.Params) string {
	return fmt.Sprintf("%s/%dx%d/%d/%s/%g/%d/%t", p.Model, p.Width, p.Height, p.Steps, p.Sampler, p.Guidance, p.ClipSkip, p.InitImage != "")
}

// decayLocked ages the served counts to now.
func (s *Scheduler) decayLocked(now time.Time) {
	if !s.last.IsZero() {
		f := math.Exp2(-now.Sub(s.last).Seconds() / s.o.FairnessHalfLife.Seconds())
		for t, v := range s.served {
			if v *= f; v < 1e-3 {
				delete(s.served, t)
			} else {
				s.served[t] = v
			}
		}
	}
	s.last = now
}

// maxLatencyPoints is the ABI's bound on the step-latency list.
const maxLatencyPoints = 256

// StepLatencyABI converts the worker's measured step latencies to the
// ABI's list (µs, at least 1; at most 256 points, the smallest batches).
// Without measurements the list is empty and the built-in policy assumes
// that batching pays, waiting at most max_wait for a batch to fill.
func StepLatencyABI(ls []worker.StepLatency) []abi.StepLatency {
	out := make([]abi.StepLatency, 0, min(len(ls), maxLatencyPoints))
	for _, l := range ls {
		if l.Images < 1 || l.Latency <= 0 || len(out) == maxLatencyPoints {
			continue
		}
		us := min(max(l.Latency.Microseconds(), 1), math.MaxUint32)
		out = append(out, abi.StepLatency{Batch: uint32(min(l.Images, math.MaxUint32)), LatencyUS: uint32(us)})
	}
	return out
}

// Input builds the batching input for the pending jobs with the worker's
// measurements.
func (s *Scheduler) Input(now time.Time, pending []worker.Pending, stats worker.Stats) *abi.BatchingInput {
	in := &abi.BatchingInput{NowUS: now.UnixMicro(), CompatRules: CompatRules(), MaxBatch: uint32(s.o.MaxBatch),
		MaxWaitUS: uint64(s.o.MaxWait.Microseconds())}
	if s.o.Memory != nil {
		in.FreeMemBytes = uint64(max(s.o.Memory.FreeBytes(), 1)) // 0 would mean "unknown"
	}
	if s.o.StepLatency != nil {
		in.StepLatency = s.o.StepLatency()
	} else {
		in.StepLatency = StepLatencyABI(stats.StepLatency)
	}
	if s.o.Memory == nil && stats.FreeMemBytes > 0 {
		in.FreeMemBytes = uint64(stats.FreeMemBytes) // the worker's reading at its last step
	}
	tenants := map[string]float64{}
	for _, p := range pending {
		j := p.Job
		aj := abi.Job{ID: j.ID, Tenant: j.Tenant, Priority: priority(j.Params.Priority),
			ArrivalUS: j.CreatedAt.UnixMicro(), Width: uint32(j.Params.Width), Height: uint32(j.Params.Height),
			N: uint32(j.Params.N), Steps: uint32(j.Params.Steps), Sampler: j.Params.Sampler, CompatKey: CompatKey(&j.Params)}
		if s.o.Memory != nil {
			need, _ := s.o.Memory.ActivationBytes(memory.Batch{Model: j.Params.Model, Images: j.Params.N, Width: j.Params.Width, Height: j.Params.Height})
			aj.MemBytes = uint64(max(need, 0))
		}
		in.Jobs = append(in.Jobs, aj)
		tenants[j.Tenant] = max(tenants[j.Tenant], j.Weight)
		if in.Model == "" {
			in.Model = j.Params.Model
		}
	}
	s.mu.Lock()
	s.decayLocked(now)
	names := make([]string, 0, len(tenants))
	for t := range tenants {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, t := range names {
		w := 1.0
		if tenants[t] > 0 {
			w = tenants[t]
		}
		if s.o.Weight != nil {
			if x := s.o.Weight(t); x > 0 {
				w = x
			}
		}
		in.Tenants = append(in.Tenants, abi.TenantShare{Tenant: t, Weight: w, Served: s.served[t]})
	}
	s.mu.Unlock()
	return in
}

// Decide implements worker.Scheduler. It never fails: the registry falls
// back to the built-in policy and then to the native default.
func (s *Scheduler) Decide(now time.Time, pending []worker.Pending, stats worker.Stats) (worker.Decision, error) {
	if len(pending) == 0 {
		return worker.Decision{}, nil
	}
	if len(pending) > abi.MaxJobs {
		pending = pending[:abi.MaxJobs]
	}
	in := s.Input(now, pending, stats)
	ctx, cancel := context.WithTimeout(context.Background(), s.o.Timeout)
	defer cancel()
	out, _ := s.w.Registry.Batching(ctx, in)
	if out.Wait {
		return worker.Decision{Wait: time.Duration(out.WaitUS) * time.Microsecond}, nil
	}
	d := worker.Decision{Run: make([]int, len(out.Jobs))}
	s.mu.Lock()
	for i, idx := range out.Jobs {
		d.Run[i] = int(idx)
		j := pending[idx].Job
		s.served[j.Tenant] += float64(max(j.Params.N, 1))
	}
	s.mu.Unlock()
	return d, nil
}

var _ worker.Admitter = (*Scheduler)(nil)

// Admit implements worker.Admitter: the batching policy (ABI minor 1)
// decides which pending jobs join the running batch at this step
// boundary. Only jobs that may join (same model and size) are offered; the
// built-in policy answers for modules of minor 0.
func (s *Scheduler) Admit(now time.Time, run worker.RunningState, pending []worker.Pending, stats worker.Stats) ([]int, error) {
	var offered []worker.Pending
	var of []int
	for i, p := range pending {
		if worker.Joinable(run, &p.Job.Params) && len(offered) < abi.MaxJobs {
			offered = append(offered, p)
			of = append(of, i)
		}
	}
	if len(offered) == 0 || len(run.Items) == 0 || run.Images >= run.MaxImages {
		return nil, nil
	}
	in := s.Input(now, offered, stats)
	in.MaxBatch = uint32(max(run.MaxImages, 1))
	if run.FreeMemBytes > 0 {
		in.FreeMemBytes = uint64(run.FreeMemBytes)
	}
	in.ImageMemBytes = uint64(max(run.ImageMemBytes, 0))
	for _, it := range run.Items {
		in.Running = append(in.Running, abi.RunningJob{ID: it.Job, Tenant: it.Tenant, N: uint32(max(it.Images, 1)), RemainingSteps: uint32(max(it.Remaining, 0))})
		if len(in.Running) == abi.MaxJobs {
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.o.Timeout)
	defer cancel()
	out, _ := s.w.Registry.Batching(ctx, in)
	if out.Wait {
		return nil, nil
	}
	idx := make([]int, len(out.Jobs))
	s.mu.Lock()
	for k, i := range out.Jobs {
		idx[k] = of[i]
		j := offered[i].Job
		s.served[j.Tenant] += float64(max(j.Params.N, 1))
	}
	s.mu.Unlock()
	return idx, nil
}
