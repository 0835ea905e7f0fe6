package placement

import "time"

// Placer answers a worker's admission questions from a Board and a Policy.
type Placer struct {
	policy *Policy
	board  *Board
	now    func() time.Time
}

// NewPlacer returns a placer over board; now is the clock (nil: time.Now).
func NewPlacer(p *Policy, board *Board, now func() time.Time) *Placer {
	if now == nil {
		now = time.Now
	}
	return &Placer{policy: p, board: board, now: now}
}

// Take says whether worker should hold a job of model created at created
// now, rather than hand it back for a GPU that holds the model.
func (pl *Placer) Take(worker, model string, created time.Time) bool {
	now := pl.now()
	waited := time.Duration(0)
	if !created.IsZero() {
		waited = now.Sub(created)
	}
	return pl.policy.Decide(worker, pl.board.GPUs(now), model, waited).Take
}

// Demand is the demand for model that worker's eviction policy should
// see, given the jobs of it in the worker's own window (local): 0 when the
// worker's copy is surplus (see Policy.Surplus).
func (pl *Placer) Demand(worker, model string, local int) int {
	gpus := pl.board.GPUs(pl.now())
	total := 0
	for _, g := range gpus {
		if g.Worker != worker {
			total += g.Waiting[model]
		}
	}
	return pl.policy.Demand(worker, gpus, model, local, total+local)
}
