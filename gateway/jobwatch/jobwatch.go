// Package jobwatch follows the job records in the KV bucket on behalf of a
// gateway: it turns state changes into events (queued, started,
// succeeded, failed, canceled) for the WebSocket hub, keeps the quota
// limiter's count of live jobs, knows the queue position of every queued
// job, and lets requests wait for a job to finish.
package jobwatch

import (
	"context"
	"errors"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/jobs"
)

// Options configure a Watcher.
type Options struct {
	Store *jobs.Store
	// Live is told whether each job counts as live (queued or running).
	Live func(tenant, id string, live bool)
	// Emit receives each state change as an event for the job's tenant.
	Emit func(tenant string, ev events.Event)
}

// Watcher follows job records.
type Watcher struct {
	o       Options
	mu      sync.Mutex
	last    map[string]live // key → state of live jobs
	waiters map[string][]chan *jobs.Job
	synced  chan struct{}
}

// live is what the watcher keeps of a queued or running job.
type live struct {
	status string
	// rank orders priorities (0 = high); since is the record revision at
	// which the job last became queued: within a tenant, workers take
	// queued jobs by priority, then in the order they were queued.
	rank  int
	since uint64
	// weight is the tenant's fair-queuing weight (0 counts as 1).
	weight float64
}

// ahead reports whether a waits in front of b.
func (a live) ahead(b live) bool {
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	return a.since < b.since
}

func priorityRank(p string) int {
	for i, q := range jobs.Priorities() {
		if q == p {
			return i
		}
	}
	return len(jobs.Priorities())
}

// New returns a watcher; call Run.
func New(o Options) *Watcher {
	if o.Live == nil {
		o.Live = func(string, string, bool) {}
	}
	if o.Emit == nil {
		o.Emit = func(string, events.Event) {}
	}
	return &Watcher{o: o, last: map[string]live{}, waiters: map[string][]chan *jobs.Job{}, synced: make(chan struct{})}
}

// Synced is closed once the current records have been read.
func (w *Watcher) Synced() <-chan struct{} { return w.synced }

// Run follows the records until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	kw, err := w.o.Store.Watch(ctx)
	if err != nil {
		return err
	}
	defer kw.Stop()
	replaying := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-kw.Updates():
			if !ok {
				return errors.New("jobwatch: watch ended")
			}
			if e == nil {
				if replaying {
					replaying = false
					close(w.synced)
				}
				continue
			}
			j, ok := jobs.DecodeEntry(e)
			if !ok {
				if op := e.Operation(); op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge {
					w.mu.Lock()
					delete(w.last, e.Key())
					w.mu.Unlock()
				}
				continue
			}
			w.handle(ctx, j, e.Revision(), replaying)
		}
	}
}

func key(tenant, id string) string { return tenant + "." + id }

func (w *Watcher) handle(ctx context.Context, j *jobs.Job, rev uint64, replaying bool) {
	k := key(j.Tenant, j.ID)
	final := jobs.Final(j.Status)
	w.o.Live(j.Tenant, j.ID, !final)
	w.mu.Lock()
	old, seen := w.last[k]
	prev := old.status
	if final {
		delete(w.last, k)
	} else {
		st := live{status: j.Status, rank: priorityRank(j.Params.Priority), since: rev, weight: j.Weight}
		if seen && prev == j.Status {
			st.since = old.since // updated while queued: keeps its place
		}
		w.last[k] = st
	}
	var ws []chan *jobs.Job
	if final {
		ws = w.waiters[k]
		delete(w.waiters, k)
	}
	w.mu.Unlock()
	for _, ch := range ws {
		ch <- j
	}
	if replaying || (seen && prev == j.Status) {
		return
	}
	if !seen && final && j.FinishedAt != nil && time.Since(*j.FinishedAt) > time.Minute {
		return // an old record touched again (e.g. a late ack), not news
	}
	ev, ok := EventOf(j)
	if !ok {
		return
	}
	if ev.Type == events.TypeQueued {
		pos := w.Position(j.Tenant, j.ID, j.Params.Priority)
		ev.Position = &pos
	}
	w.o.Emit(j.Tenant, ev)
}

// Position estimates how many queued jobs (of every tenant) will run
// before a tenant's queued job of the given priority under weighted fair
// queuing: the tenant's own jobs ahead of it (higher priorities, then those
// of its priority queued before it), plus from every other tenant as many
// of its queued jobs as its weight earns while this tenant's are served
// (jobs counted alike). A job the watcher has not yet seen queued (its
// record is newer than the watch) counts as the newest of its priority.
func (w *Watcher) Position(tenant, id, priority string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	me, found := w.last[key(tenant, id)]
	if !found || me.status != jobs.StatusQueued {
		me = live{status: jobs.StatusQueued, rank: priorityRank(priority), since: math.MaxUint64}
	}
	own, others, weights := 0, map[string]int{}, map[string]float64{}
	myWeight := me.weight
	for k, o := range w.last {
		if o.status != jobs.StatusQueued || k == key(tenant, id) {
			continue
		}
		t, _, _ := strings.Cut(k, ".")
		if t == tenant {
			myWeight = max(myWeight, o.weight)
			if o.ahead(me) {
				own++
			}
			continue
		}
		others[t]++
		weights[t] = max(weights[t], o.weight)
	}
	return own + fairShare(own, myWeight, others, weights)
}

// fairShare is how many of the other tenants' queued jobs run while a
// tenant of weight mine serves own+1 jobs.
func fairShare(own int, mine float64, others map[string]int, weights map[string]float64) int {
	if mine <= 0 {
		mine = 1
	}
	n := 0
	for t, queued := range others {
		wt := weights[t]
		if wt <= 0 {
			wt = 1
		}
		n += min(queued, int(float64(own+1)*wt/mine))
	}
	return n
}

// Positions returns the queue position (see Position) of each queued job
// of a tenant that the watcher has seen, by job id.
func (w *Watcher) Positions(tenant string) map[string]int {
	w.mu.Lock()
	type entry struct {
		id string
		l  live
	}
	var mine []entry
	others, weights := map[string]int{}, map[string]float64{}
	myWeight := 0.0
	prefix := tenant + "."
	for k, l := range w.last {
		if l.status != jobs.StatusQueued {
			continue
		}
		if id, ok := strings.CutPrefix(k, prefix); ok {
			mine = append(mine, entry{id, l})
			myWeight = max(myWeight, l.weight)
			continue
		}
		t, _, _ := strings.Cut(k, ".")
		others[t]++
		weights[t] = max(weights[t], l.weight)
	}
	w.mu.Unlock()
	sort.Slice(mine, func(i, j int) bool { return mine[i].l.ahead(mine[j].l) })
	out := map[string]int{}
	for i, e := range mine {
		out[e.id] = i + fairShare(i, myWeight, others, weights)
	}
	return out
}

// ImageURL is the API path of an image.
func ImageURL(id string) string { return "/v1/images/" + id }

// EventOf describes a job's current state as an event.
func EventOf(j *jobs.Job) (events.Event, bool) {
	ev := events.Event{Job: j.ID, Time: time.Now().UTC()}
	switch j.Status {
	case jobs.StatusQueued:
		ev.Type, ev.Adjustments = events.TypeQueued, j.Adjustments
	case jobs.StatusRunning:
		ev.Type, ev.Worker, ev.Attempt, ev.Steps = events.TypeStarted, j.Worker, j.Attempts, j.Params.Steps
	case jobs.StatusSucceeded:
		ev.Type = events.TypeSucceeded
		for _, im := range j.Images {
			ev.Images = append(ev.Images, events.Image{ID: im.ID, URL: ImageURL(im.ID), Seed: im.Seed, Width: im.Width, Height: im.Height})
		}
	case jobs.StatusFailed:
		ev.Type = events.TypeFailed
		if j.Error != nil {
			ev.Error = &events.Error{Code: j.Error.Code, Message: j.Error.Message}
		}
	case jobs.StatusCanceled:
		ev.Type = events.TypeCanceled
	default:
		return ev, false
	}
	if j.StartedAt != nil && j.FinishedAt != nil {
		ev.Duration = j.FinishedAt.Sub(*j.StartedAt).Seconds()
	}
	return ev, true
}

// Wait returns the job once it is final, or ctx's error.
func (w *Watcher) Wait(ctx context.Context, tenant, id string) (*jobs.Job, error) {
	ch := make(chan *jobs.Job, 1)
	k := key(tenant, id)
	w.mu.Lock()
	w.waiters[k] = append(w.waiters[k], ch)
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		list := w.waiters[k]
		for i, c := range list {
			if c == ch {
				w.waiters[k] = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(w.waiters[k]) == 0 {
			delete(w.waiters, k)
		}
		w.mu.Unlock()
	}()
	// It may have finished before we registered.
	if j, _, err := w.o.Store.Get(ctx, tenant, id); err != nil {
		return nil, err
	} else if jobs.Final(j.Status) {
		return j, nil
	}
	select {
	case j := <-ch:
		return j, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
