package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-project/kiln/server/fairq"
)

// The work queue has one durable consumer per (priority, tenant) lane,
// made when a tenant first enqueues at a priority, so that workers can
// choose whose job to take next (FairQueue). Their filters do not
// overlap, as a work-queue stream requires.

func laneName(priority, tenant string) string { return "lane-" + priority + "-" + tenant }

// legacyConsumers are the per-priority consumers of earlier versions; they
// overlap the lanes and are removed at Open (their messages stay queued).
var legacyConsumers = []string{"workers-high", "workers-normal", "workers-low"}

// openLanes removes legacy consumers and makes sure every (priority,
// tenant) with queued messages has its lane.
func (s *Store) openLanes(ctx context.Context) error {
	for _, name := range legacyConsumers {
		if err := s.stream.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("jobs: remove legacy consumer %s: %w", name, err)
		}
	}
	info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(queuePrefix+">"))
	if err != nil {
		return fmt.Errorf("jobs: queue subjects: %w", err)
	}
	for subj := range info.State.Subjects {
		parts := strings.Split(strings.TrimPrefix(subj, queuePrefix), ".")
		if len(parts) == 3 && ValidPriority(parts[0]) && ValidTenantID(parts[1]) {
			if _, err := s.lane(ctx, parts[0], parts[1]); err != nil {
				return err
			}
		}
	}
	return nil
}

// lane returns the consumer of a (priority, tenant) lane, making it when
// needed.
func (s *Store) lane(ctx context.Context, priority, tenant string) (jetstream.Consumer, error) {
	name := laneName(priority, tenant)
	s.lanesMu.Lock()
	c, ok := s.lanes[name]
	s.lanesMu.Unlock()
	if ok {
		return c, nil
	}
	c, err := s.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "kiln workers take " + priority + "-priority jobs of tenant " + tenant,
		FilterSubject: queuePrefix + priority + "." + tenant + ".>",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.opts.AckWait,
		// One delivery more than the attempts: the worker that receives
		// it marks the job failed instead of running it again.
		MaxDeliver:    s.opts.Attempts + 1,
		MaxAckPending: 10000,
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: lane %s: %w", name, err)
	}
	s.lanesMu.Lock()
	s.lanes[name] = c
	s.lanesMu.Unlock()
	return c, nil
}

// LaneConsumer returns the consumer of a tenant's lane at one priority.
func (s *Store) LaneConsumer(ctx context.Context, priority, tenant string) (jetstream.Consumer, error) {
	if !ValidPriority(priority) || !ValidTenantID(tenant) {
		return nil, fmt.Errorf("jobs: invalid lane %q %q", priority, tenant)
	}
	return s.lane(ctx, priority, tenant)
}

// Lane is the state of one queue lane.
type Lane struct {
	Priority, Tenant string
	// Pending counts undelivered messages, AckPending delivered ones not
	// yet acknowledged, Redelivered those waiting to be delivered again.
	Pending, AckPending, Redelivered int
}

// Lanes lists the queue's lanes.
func (s *Store) Lanes(ctx context.Context) ([]Lane, error) {
	l := s.stream.ListConsumers(ctx)
	var out []Lane
	for info := range l.Info() {
		rest, ok := strings.CutPrefix(info.Config.FilterSubject, queuePrefix)
		parts := strings.Split(rest, ".")
		if !ok || len(parts) != 3 || !ValidPriority(parts[0]) || !ValidTenantID(parts[1]) {
			continue
		}
		out = append(out, Lane{Priority: parts[0], Tenant: parts[1], Pending: int(info.NumPending),
			AckPending: info.NumAckPending, Redelivered: info.NumRedelivered})
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("jobs: list lanes: %w", err)
	}
	return out, nil
}

// FairQueue is one worker's fair view of the work queue: it takes
// messages across tenants in weighted fair order (package fairq: each
// tenant's share follows the weight its jobs carry, whatever load it
// offers) and, within a tenant, by priority with aging. It is safe for
// concurrent use.
type FairQueue struct {
	s *Store
	// ListEvery is how long one listing of the lanes is reused (100 ms).
	ListEvery time.Duration

	mu      sync.Mutex
	sched   *fairq.Scheduler
	lanes   []Lane
	listed  time.Time
	drained map[string]bool // lanes a fetch found empty, by name
}

// FairQueue returns a new fair view of the queue.
func (s *Store) FairQueue() *FairQueue {
	return &FairQueue{s: s, ListEvery: 100 * time.Millisecond, sched: fairq.New(), drained: map[string]bool{}}
}

func priorityIndex(p string) int {
	for i, q := range Priorities() {
		if q == p {
			return i
		}
	}
	return len(Priorities())
}

// Next takes the next message in fair order without waiting; nil when
// every lane is empty. refresh forces a fresh listing of the lanes.
func (q *FairQueue) Next(ctx context.Context, refresh bool) (jetstream.Msg, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if refresh || q.lanes == nil || time.Since(q.listed) >= q.ListEvery {
		lanes, err := q.s.Lanes(ctx)
		if err != nil {
			return nil, err
		}
		q.lanes, q.listed = lanes, time.Now()
	}
	// Consumer counts lag behind publishes by a moment, so a listed count
	// of zero is not trusted: a lane counts as waiting until a fetch from
	// it came back empty (and again once the listing shows messages).
	for _, l := range q.lanes {
		if l.Pending > 0 {
			delete(q.drained, laneName(l.Priority, l.Tenant))
		}
	}
	var waiting []fairq.Lane
	var other []int // drained lanes with deliveries in flight: redeliveries
	index := map[fairq.Lane]int{}
	for i, l := range q.lanes {
		fl := fairq.Lane{Tenant: l.Tenant, Priority: priorityIndex(l.Priority)}
		index[fl] = i
		switch {
		case !q.drained[laneName(l.Priority, l.Tenant)]:
			waiting = append(waiting, fl)
		case l.AckPending > 0 || l.Redelivered > 0:
			other = append(other, i)
		}
	}
	order := q.sched.Order(waiting)
	for _, i := range other {
		l := q.lanes[i]
		order = append(order, fairq.Lane{Tenant: l.Tenant, Priority: priorityIndex(l.Priority)})
	}
	for _, fl := range order {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l := &q.lanes[index[fl]]
		name := laneName(l.Priority, l.Tenant)
		c, err := q.s.lane(ctx, l.Priority, l.Tenant)
		if err != nil {
			return nil, err
		}
		batch, err := c.FetchNoWait(1)
		if err != nil {
			return nil, fmt.Errorf("jobs: fetch %s: %w", name, err)
		}
		for msg := range batch.Messages() {
			var qm QueueMessage
			_ = json.Unmarshal(msg.Data(), &qm)
			q.sched.Served(fl, qm.Work, qm.Weight, waiting)
			l.Pending = max(l.Pending-1, 0)
			delete(q.drained, name)
			return msg, nil
		}
		l.Pending = 0
		q.drained[name] = true
	}
	return nil, nil
}

// Wait takes the next message in fair order, waiting up to d for one.
func (q *FairQueue) Wait(ctx context.Context, d time.Duration) (jetstream.Msg, error) {
	deadline := time.Now().Add(d)
	for {
		msg, err := q.Next(ctx, true)
		if msg != nil || err != nil || !time.Now().Before(deadline) {
			return msg, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(20*time.Millisecond, time.Until(deadline))):
		}
	}
}
