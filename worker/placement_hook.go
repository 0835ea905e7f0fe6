package worker

import "time"

// Placement decides, for a worker that has just fetched a job, whether to
// hold it or hand it back for a GPU that holds its model (package
// worker/placement implements it). Nil: every fetched job is held, as
// when there is one GPU.
type Placement interface {
	// Take says whether worker should hold a job of model created at
	// created.
	Take(worker, model string, created time.Time) bool
	// Demand is the demand for model the worker's eviction policy sees,
	// given the jobs of it in the worker's window (local).
	Demand(worker, model string, local int) int
}

// place says whether the worker keeps a fetched job (the placement hook).
func (w *Worker) place(p pendingMsg) bool {
	if w.o.Placement == nil {
		return true
	}
	if w.o.Placement.Take(w.o.ID, p.Job.Params.Model, p.Job.CreatedAt) {
		return true
	}
	w.o.Metrics.PlacementDeferred.Inc()
	return false
}

// placedDemand wraps the window's demand with the placement's view.
func (w *Worker) placedDemand(local func(string) int) func(string) int {
	if w.o.Placement == nil {
		return local
	}
	return func(model string) int { return w.o.Placement.Demand(w.o.ID, model, local(model)) }
}

// queued counts, by model, the jobs the worker holds and has not finished
// (heartbeats carry it for placement).
func (w *Worker) queued() map[string]int {
	out := map[string]int{}
	if q := w.win.Load(); q != nil {
		q.mu.Lock()
		for _, p := range q.pending {
			out[p.Job.Params.Model]++
		}
		q.mu.Unlock()
	}
	w.mu.Lock()
	for _, a := range w.running {
		out[a.job.Params.Model]++
	}
	w.mu.Unlock()
	if len(out) == 0 {
		return nil
	}
	return out
}
