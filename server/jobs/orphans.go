package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// errNotOrphan stops an update of a record that is no longer an orphan.
var errNotOrphan = errors.New("jobs: not an orphan")

// RepairOrphans puts back to queued every job recorded as running by a
// worker that live says is gone, started more than grace ago — a job whose
// worker was stopped or killed, and which would otherwise show "running"
// while nobody runs it — and makes sure each has a queue message. The
// attempt it used stays counted (a graceful hand-back already gave it
// back). It returns how many it repaired.
func (s *Store) RepairOrphans(ctx context.Context, live func(worker string) bool, grace time.Duration) (int, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return 0, nil
		}
		return 0, fmt.Errorf("jobs: repair orphans: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	orphan := func(j *Job) bool {
		return j.Status == StatusRunning && !live(j.Worker) && j.StartedAt != nil && time.Since(*j.StartedAt) > grace
	}
	n := 0
	for _, k := range keys {
		tenant, id, ok := strings.Cut(k, ".")
		if !ok {
			continue
		}
		j, _, err := s.Get(ctx, tenant, id)
		if err != nil || !orphan(j) {
			continue
		}
		worker := j.Worker
		j, err = s.Update(ctx, tenant, id, func(r *Job) error {
			if !orphan(r) || r.Worker != worker {
				return errNotOrphan
			}
			r.Status, r.Worker, r.StartedAt = StatusQueued, "", nil
			return nil
		})
		if errors.Is(err, errNotOrphan) {
			continue
		}
		if err != nil {
			return n, err
		}
		if _, err := s.stream.GetLastMsgForSubject(ctx, QueueSubject(j.Params.Priority, j.Tenant, j.ID)); err != nil {
			if !errors.Is(err, jetstream.ErrMsgNotFound) {
				return n, fmt.Errorf("jobs: repair %s: %w", j.ID, err)
			}
			if err := s.enqueue(ctx, j, fmt.Sprintf("%s.o%d", j.ID, time.Now().UnixNano())); err != nil {
				return n, fmt.Errorf("jobs: re-enqueue %s: %w", j.ID, err)
			}
		}
		n++
	}
	return n, nil
}
