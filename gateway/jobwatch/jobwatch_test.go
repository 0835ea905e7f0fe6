package jobwatch

import (
	"fmt"
	"testing"

	"github.com/kiln-project/kiln/server/jobs"
)

// TestPositionsFollowFairQueuing: a tenant's job waits behind its own
// earlier jobs and behind the share other tenants' weights earn, not
// behind another tenant's whole backlog.
func TestPositionsFollowFairQueuing(t *testing.T) {
	w := New(Options{})
	queue := func(tenant, id, priority string, since uint64, weight float64) {
		w.last[key(tenant, id)] = live{status: jobs.StatusQueued, rank: priorityRank(priority), since: since, weight: weight}
	}
	for i := 1; i <= 10; i++ {
		queue("heavy", fmt.Sprintf("h%02d", i), jobs.PriorityNormal, uint64(i), 1)
	}
	queue("light", "l1", jobs.PriorityNormal, 11, 1)
	if p := w.Position("light", "l1", jobs.PriorityNormal); p != 1 {
		t.Fatalf("light's job behind a backlog of ten: position %d, want 1", p)
	}
	if p := w.Position("heavy", "h05", jobs.PriorityNormal); p != 5 {
		t.Fatalf("heavy's fifth job: position %d, want 5 (four own, one of light's)", p)
	}
	if got := w.Positions("heavy"); got["h01"] != 1 || got["h10"] != 10 {
		t.Fatalf("positions %v", got)
	}
	// A high-priority job goes before its tenant's older normal ones.
	queue("heavy", "h-high", jobs.PriorityHigh, 12, 1)
	if p := w.Position("heavy", "h-high", jobs.PriorityHigh); p != 1 {
		t.Fatalf("heavy's high-priority job: position %d, want 1", p)
	}
	delete(w.last, key("heavy", "h-high"))
	// Weight 3 earns three jobs per job of a weight-1 tenant.
	for i := 1; i <= 10; i++ {
		queue("heavy", fmt.Sprintf("h%02d", i), jobs.PriorityNormal, uint64(i), 3)
	}
	if p := w.Position("light", "l1", jobs.PriorityNormal); p != 3 {
		t.Fatalf("light behind a weight-3 tenant: position %d, want 3", p)
	}
}
