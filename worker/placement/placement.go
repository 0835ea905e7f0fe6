// Package placement decides which GPU of a host runs a queued job, knowing
// each GPU's resident models, queue and measured speed: a job goes to a GPU
// that already holds its model unless that GPU is the bottleneck, a popular
// model is replicated to a second GPU when the holder's queue grows, and a
// replica whose demand has fallen is marked surplus so that the eviction
// policy drops it first.
//
// Workers pull jobs, so the policy answers one question for the worker that
// has just fetched a job: take it now, or leave it for a GPU that holds the
// model. Decisions are pure functions of their inputs (deterministic); Board
// keeps the inputs from worker heartbeats.
package placement

import (
	"sort"
	"time"
)

// Tier is where a GPU holds a model.
type Tier int

// Tiers, slowest first.
const (
	// Absent: not held; using it means a load from disk.
	Absent Tier = iota
	// Host: offloaded to pinned host memory; using it means a copy.
	Host
	// Device: resident on the GPU.
	Device
)

// GPU is one GPU (one worker) as the policy sees it.
type GPU struct {
	// Worker names the GPU's worker.
	Worker string
	// Models are the models the GPU holds and where.
	Models map[string]Tier
	// Queued counts the jobs the GPU has taken and not finished (its
	// window and running batch).
	Queued int
	// Waiting counts those jobs by model.
	Waiting map[string]int
	// Speed is the measured speed per model (megapixel-steps per second;
	// absent or 0: not measured).
	Speed map[string]float64
}

// Config tunes the policy; zero fields take the defaults.
type Config struct {
	// ReplicateAt is the queue length at which a GPU holding a model counts
	// as the bottleneck, so that another GPU loads the model too (default 4).
	ReplicateAt int
	// LoadCost is what loading a model costs, counted in jobs of the model
	// (default 2): a GPU without the model takes a job only when its queue
	// plus this, at its speed, ends before the holder's queue.
	LoadCost float64
	// MaxDefer is how long a job may wait for a holder before any GPU
	// takes it (default 5 s).
	MaxDefer time.Duration
}

func (c Config) withDefaults() Config {
	if c.ReplicateAt <= 0 {
		c.ReplicateAt = 4
	}
	if c.LoadCost <= 0 {
		c.LoadCost = 2
	}
	if c.MaxDefer <= 0 {
		c.MaxDefer = 5 * time.Second
	}
	return c
}

// Policy is the placement policy.
type Policy struct {
	cfg Config
}

// New returns a policy with cfg's defaults filled in.
func New(cfg Config) *Policy { return &Policy{cfg: cfg.withDefaults()} }

// Config returns the policy's configuration, defaults filled in.
func (p *Policy) Config() Config { return p.cfg }

// Reason says why a decision was made.
type Reason string

// Reasons.
const (
	ReasonResident  Reason = "resident"   // this GPU holds the model on the device
	ReasonNoHolder  Reason = "no-holder"  // nobody holds it and this GPU's queue is the shortest
	ReasonShorter   Reason = "shorter"    // nobody holds it and another GPU's queue is shorter
	ReasonReplicate Reason = "replicate"  // every holder is the bottleneck: load it here too
	ReasonExpired   Reason = "waited"     // the job waited MaxDefer already
	ReasonUnknown   Reason = "unknown"    // this GPU is not on the board
	ReasonLeave     Reason = "leave"      // a holder that is not the bottleneck will take it
	ReasonNoModel   Reason = "no-model"   // the job names no model
	ReasonHostCopy  Reason = "host-copy"  // this GPU holds it in host memory, no GPU on the device
	ReasonFasterGPU Reason = "faster-gpu" // a holder would start it sooner
)

// Decision is the answer for one job.
type Decision struct {
	// Take: this worker holds the job now; otherwise it hands it back.
	Take bool
	// Holder is the GPU the job is left for (Take false).
	Holder string
	Reason Reason
}

// Decide says whether worker self should take a job of model that has
// waited for waited, given every GPU's state (self's included).
func (p *Policy) Decide(self string, gpus []GPU, model string, waited time.Duration) Decision {
	if model == "" {
		return Decision{Take: true, Reason: ReasonNoModel}
	}
	me, ok := find(gpus, self)
	if !ok {
		return Decision{Take: true, Reason: ReasonUnknown}
	}
	if me.Models[model] == Device {
		return Decision{Take: true, Reason: ReasonResident}
	}
	if waited >= p.cfg.MaxDefer {
		return Decision{Take: true, Reason: ReasonExpired}
	}
	holders := p.holders(gpus, self, model, Device)
	if len(holders) == 0 {
		if me.Models[model] == Host {
			return Decision{Take: true, Reason: ReasonHostCopy}
		}
		// Held in host memory elsewhere: that GPU restores it cheaper.
		if hs := p.holders(gpus, self, model, Host); len(hs) > 0 && hs[0].Queued < p.cfg.ReplicateAt {
			return Decision{Holder: hs[0].Worker, Reason: ReasonLeave}
		}
		// Nobody holds it: the GPU with the shortest queue loads it.
		for _, g := range gpus {
			if g.Worker != self && (g.Queued < me.Queued || g.Queued == me.Queued && g.Worker < self) {
				return Decision{Holder: g.Worker, Reason: ReasonShorter}
			}
		}
		return Decision{Take: true, Reason: ReasonNoHolder}
	}
	best := holders[0] // shortest wait first
	if best.Queued < p.cfg.ReplicateAt {
		return Decision{Holder: best.Worker, Reason: ReasonLeave}
	}
	// Every holder is at the threshold: replicate here when this GPU,
	// load included, would start the job sooner.
	load := p.cfg.LoadCost
	if me.Models[model] == Host {
		load /= 2
	}
	mine := (float64(me.Queued) + load) / rate(me, model, gpus)
	theirs := float64(best.Queued) / rate(best, model, gpus)
	if mine < theirs {
		return Decision{Take: true, Reason: ReasonReplicate}
	}
	return Decision{Holder: best.Worker, Reason: ReasonFasterGPU}
}

// holders lists the GPUs other than self that hold model at tier t, the
// one that would start a new job soonest first (ties by worker name).
func (p *Policy) holders(gpus []GPU, self, model string, t Tier) []GPU {
	var out []GPU
	for _, g := range gpus {
		if g.Worker != self && g.Models[model] == t {
			out = append(out, g)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		wi := float64(out[i].Queued) / rate(out[i], model, gpus)
		wj := float64(out[j].Queued) / rate(out[j], model, gpus)
		if wi != wj {
			return wi < wj
		}
		return out[i].Worker < out[j].Worker
	})
	return out
}

// Surplus says whether self's copy of model is no longer needed: another
// GPU holds it on the device too, and the demand (jobs of the model queued
// across the GPUs) fits in fewer copies. Of the copies, the one on the
// slowest GPU for the model (ties: the greatest worker name) is the
// surplus one, so exactly one GPU lets go at a time.
func (p *Policy) Surplus(self string, gpus []GPU, model string, demand int) bool {
	var copies []GPU
	for _, g := range gpus {
		if g.Models[model] == Device {
			copies = append(copies, g)
		}
	}
	if len(copies) < 2 {
		return false
	}
	if demand >= p.cfg.ReplicateAt*(len(copies)-1) {
		return false
	}
	sort.SliceStable(copies, func(i, j int) bool {
		ri, rj := rate(copies[i], model, gpus), rate(copies[j], model, gpus)
		if ri != rj {
			return ri < rj
		}
		return copies[i].Worker > copies[j].Worker
	})
	return copies[0].Worker == self
}

// Demand is the demand for model that self's eviction policy should see:
// local (the jobs of the model self holds) unless self's copy is surplus,
// then 0, so that it is evicted first when room is needed.
func (p *Policy) Demand(self string, gpus []GPU, model string, local, total int) int {
	if p.Surplus(self, gpus, model, total) {
		return 0
	}
	return local
}

// rate is g's speed for model relative to the others: its measured speed,
// else the mean of the speeds measured for model on any GPU, else 1.
func rate(g GPU, model string, gpus []GPU) float64 {
	if v := g.Speed[model]; v > 0 {
		return v
	}
	sum, n := 0.0, 0
	for _, o := range gpus {
		if v := o.Speed[model]; v > 0 {
			sum += v
			n++
		}
	}
	if n > 0 {
		return sum / float64(n)
	}
	return 1
}

func find(gpus []GPU, worker string) (GPU, bool) {
	for _, g := range gpus {
		if g.Worker == worker {
			return g, true
		}
	}
	return GPU{}, false
}
