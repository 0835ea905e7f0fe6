// Package live keeps what the gateway has heard about running jobs — the
// latest progress step and preview frame of each — and fans job events and
// preview frames out to in-process subscribers. The client-API adapters
// use it: AUTOMATIC1111's /sdapi/v1/progress reads a job's latest state,
// ComfyUI's /ws subscribes to a tenant's updates.
package live

import (
	"sync"
	"time"

	"github.com/kiln-project/kiln/server/events"
)

// maxJobs bounds the states kept; the oldest are dropped beyond it (jobs
// whose final event was missed).
const maxJobs = 4096

// State is a job's latest progress.
type State struct {
	Job string
	// Step and Steps are the latest progress (0 before the first).
	Step, Steps int
	// Preview is the latest preview JPEG (nil before the first).
	Preview                     []byte
	PreviewWidth, PreviewHeight int
	// Started is when the job started running (zero while queued);
	// Updated when anything was last heard.
	Started, Updated time.Time
}

// Update is one thing heard about a tenant's job: an event or a preview.
type Update struct {
	Event   *events.Event
	Preview *events.Preview
}

// Tracker holds job states and subscriptions. It is safe for concurrent
// use.
type Tracker struct {
	mu   sync.Mutex
	jobs map[string]*State
	subs map[string]map[chan Update]struct{}
}

// New returns an empty tracker.
func New() *Tracker {
	return &Tracker{jobs: map[string]*State{}, subs: map[string]map[chan Update]struct{}{}}
}

func key(tenant, job string) string { return tenant + "\x00" + job }

// state returns the job's state, creating it; t.mu is held.
func (t *Tracker) state(tenant, job string, now time.Time) *State {
	k := key(tenant, job)
	s := t.jobs[k]
	if s == nil {
		if len(t.jobs) >= maxJobs {
			t.dropOldest()
		}
		s = &State{Job: job}
		t.jobs[k] = s
	}
	s.Updated = now
	return s
}

func (t *Tracker) dropOldest() {
	var oldest string
	var at time.Time
	for k, s := range t.jobs {
		if oldest == "" || s.Updated.Before(at) {
			oldest, at = k, s.Updated
		}
	}
	delete(t.jobs, oldest)
}

// Event records a job event (started, progress, a final state) and passes
// it to the tenant's subscribers. A final event forgets the job.
func (t *Tracker) Event(tenant string, ev events.Event) {
	now := time.Now()
	t.mu.Lock()
	switch ev.Type {
	case events.TypeStarted:
		s := t.state(tenant, ev.Job, now)
		s.Started, s.Step, s.Preview = now, 0, nil
	case events.TypeProgress:
		s := t.state(tenant, ev.Job, now)
		if s.Started.IsZero() {
			s.Started = now
		}
		s.Step, s.Steps = ev.Step, ev.Steps
	case events.TypeSucceeded, events.TypeFailed, events.TypeCanceled:
		delete(t.jobs, key(tenant, ev.Job))
	}
	t.fanOut(tenant, Update{Event: &ev})
	t.mu.Unlock()
}

// Preview records a job's latest preview frame and passes it on.
func (t *Tracker) Preview(tenant string, p events.Preview) {
	t.mu.Lock()
	s := t.state(tenant, p.Job, time.Now())
	s.Preview, s.PreviewWidth, s.PreviewHeight = p.JPEG, p.Width, p.Height
	if p.Step > s.Step {
		s.Step, s.Steps = p.Step, p.Steps
	}
	t.fanOut(tenant, Update{Preview: &p})
	t.mu.Unlock()
}

// fanOut sends without blocking; a subscriber whose buffer is full misses
// the update. t.mu is held.
func (t *Tracker) fanOut(tenant string, u Update) {
	for ch := range t.subs[tenant] {
		select {
		case ch <- u:
		default:
		}
	}
}

// Get returns a job's latest state.
func (t *Tracker) Get(tenant, job string) (State, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.jobs[key(tenant, job)]
	if !ok {
		return State{}, false
	}
	return *s, true
}

// Subscribe returns a channel of the tenant's updates (buffered by buf)
// and the function that ends the subscription.
func (t *Tracker) Subscribe(tenant string, buf int) (<-chan Update, func()) {
	ch := make(chan Update, max(buf, 1))
	t.mu.Lock()
	if t.subs[tenant] == nil {
		t.subs[tenant] = map[chan Update]struct{}{}
	}
	t.subs[tenant][ch] = struct{}{}
	t.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			t.mu.Lock()
			delete(t.subs[tenant], ch)
			if len(t.subs[tenant]) == 0 {
				delete(t.subs, tenant)
			}
			t.mu.Unlock()
		})
	}
}
