// Package fairq decides which tenant's queue a worker serves next:
// weighted fair queuing by virtual time (start-time fair queuing) across
// tenants, and strict priority with aging within a tenant.
//
// Each tenant has a virtual time that grows by work/weight whenever it is
// served, and the backlogged tenant with the smallest virtual time goes
// next; so under contention tenants receive work in proportion to their
// weights whatever load they offer. A tenant that becomes backlogged
// starts at the current virtual time (the smallest of the backlogged
// tenants), so idling earns no credit and newcomers wait at most one round.
// Within a tenant, higher priorities go first, but a lower priority that
// has been passed over Aging times in a row is served next, so no job
// starves.
package fairq

import (
	"math"
	"sort"
)

// Aging is how many times in a row a tenant's non-empty lower priority
// may be passed over before it is served.
const Aging = 8

// Lane is a queue of one tenant at one priority (0 = highest).
type Lane struct {
	Tenant   string
	Priority int
}

// Scheduler keeps the virtual times. It is not safe for concurrent use.
type Scheduler struct {
	vt      map[string]float64 // tenant → virtual time
	active  map[string]bool    // tenants backlogged at the last Order
	skipped map[Lane]int       // lower priorities passed over in a row
	now     float64            // the system virtual time
}

// New returns a scheduler with no history.
func New() *Scheduler {
	return &Scheduler{vt: map[string]float64{}, active: map[string]bool{}, skipped: map[Lane]int{}}
}

// Order returns the non-empty lanes in the order to try them: tenants by
// virtual time (ties by name), and each tenant's lanes by priority with
// aging. Tenants that were not backlogged before start at the current
// virtual time.
func (s *Scheduler) Order(nonEmpty []Lane) []Lane {
	byTenant := map[string][]int{}
	for _, l := range nonEmpty {
		byTenant[l.Tenant] = append(byTenant[l.Tenant], l.Priority)
	}
	tenants := make([]string, 0, len(byTenant))
	for t := range byTenant {
		tenants = append(tenants, t)
	}
	// The system virtual time: the smallest of the tenants still
	// backlogged, or the largest known when none is.
	minVT := math.Inf(1)
	for _, t := range tenants {
		if s.active[t] {
			minVT = math.Min(minVT, s.vt[t])
		}
	}
	if !math.IsInf(minVT, 1) {
		s.now = math.Max(s.now, minVT)
	}
	next := map[string]bool{}
	for _, t := range tenants {
		if !s.active[t] {
			s.vt[t] = math.Max(s.vt[t], s.now)
		}
		next[t] = true
	}
	s.active = next
	for l := range s.skipped {
		if !next[l.Tenant] {
			delete(s.skipped, l)
		}
	}
	sort.Slice(tenants, func(i, j int) bool {
		a, b := s.vt[tenants[i]], s.vt[tenants[j]]
		if a != b {
			return a < b
		}
		return tenants[i] < tenants[j]
	})
	out := make([]Lane, 0, len(nonEmpty))
	for _, t := range tenants {
		prios := byTenant[t]
		sort.Ints(prios)
		// An aged lower priority goes first.
		aged := -1
		for _, p := range prios[1:] {
			if s.skipped[Lane{t, p}] >= Aging && (aged < 0 || s.skipped[Lane{t, p}] > s.skipped[Lane{t, aged}]) {
				aged = p
			}
		}
		if aged >= 0 {
			out = append(out, Lane{t, aged})
		}
		for _, p := range prios {
			if p != aged {
				out = append(out, Lane{t, p})
			}
		}
	}
	return out
}

// Served charges a tenant for work taken from one of its lanes: its
// virtual time grows by work/weight (weights ≤ 0 count as 1, work ≤ 0 as
// 1), and the tenant's other non-empty lower priorities count one more
// pass-over. nonEmpty is the list given to the Order that preceded it.
func (s *Scheduler) Served(l Lane, work, weight float64, nonEmpty []Lane) {
	if !(weight > 0) || math.IsInf(weight, 0) {
		weight = 1
	}
	if !(work > 0) || math.IsInf(work, 0) {
		work = 1
	}
	if _, ok := s.vt[l.Tenant]; !ok {
		s.vt[l.Tenant] = s.now
	}
	s.vt[l.Tenant] += work / weight
	s.skipped[l] = 0
	for _, o := range nonEmpty {
		if o.Tenant == l.Tenant && o.Priority > l.Priority {
			s.skipped[o]++
		}
	}
}

// VirtualTime returns a tenant's virtual time (for tests and metrics).
func (s *Scheduler) VirtualTime(tenant string) float64 { return s.vt[tenant] }
