package fairq

import (
	"math"
	"testing"
)

// simulate runs rounds in which tenants offer jobs (offer per round) and
// the worker serves one job; it returns the jobs each tenant got.
func simulate(t *testing.T, rounds int, offer map[string]int, weight map[string]float64) map[string]int {
	t.Helper()
	s := New()
	backlog := map[string]int{}
	got := map[string]int{}
	for r := 0; r < rounds; r++ {
		for tn, n := range offer {
			backlog[tn] += n
		}
		var lanes []Lane
		for tn, n := range backlog {
			if n > 0 {
				lanes = append(lanes, Lane{tn, 1})
			}
		}
		l := s.Order(lanes)[0]
		backlog[l.Tenant]--
		got[l.Tenant]++
		s.Served(l, 1, weight[l.Tenant], lanes)
	}
	return got
}

func TestEqualWeightsShareEquallyUnderUnequalLoad(t *testing.T) {
	got := simulate(t, 1000, map[string]int{"heavy": 10, "light": 1}, nil)
	if r := float64(got["light"]) / float64(got["heavy"]); math.Abs(r-1) > 0.1 {
		t.Fatalf("10:1 offered, weights 1:1: got %v (ratio %.2f)", got, r)
	}
}

func TestWeightThreeGetsThreeTimes(t *testing.T) {
	got := simulate(t, 1000, map[string]int{"big": 10, "small": 1}, map[string]float64{"big": 3})
	if r := float64(got["big"]) / float64(got["small"]); math.Abs(r-3)/3 > 0.1 {
		t.Fatalf("weights 3:1: got %v (ratio %.2f)", got, r)
	}
}

func TestIdleEarnsNoCredit(t *testing.T) {
	s := New()
	a := []Lane{{"a", 1}}
	for i := 0; i < 100; i++ {
		s.Order(a)
		s.Served(Lane{"a", 1}, 1, 1, a)
	}
	// b arrives: it starts at a's virtual time, so it alternates with a
	// instead of taking the next 100 jobs.
	both := []Lane{{"a", 1}, {"b", 1}}
	got := map[string]int{}
	for i := 0; i < 10; i++ {
		l := s.Order(both)[0]
		got[l.Tenant]++
		s.Served(l, 1, 1, both)
	}
	if got["a"] < 4 || got["b"] < 4 {
		t.Fatalf("after a's long solo run: %v", got)
	}
}

func TestPriorityWithinTenantWithAging(t *testing.T) {
	s := New()
	lanes := []Lane{{"a", 2}, {"a", 0}, {"a", 1}}
	order := s.Order(lanes)
	if order[0] != (Lane{"a", 0}) || order[1] != (Lane{"a", 1}) || order[2] != (Lane{"a", 2}) {
		t.Fatalf("order %v", order)
	}
	// High keeps coming: low is served after Aging pass-overs.
	served := 0
	for i := 0; i < 3*Aging; i++ {
		l := s.Order(lanes)[0]
		if l.Priority == 2 {
			served++
		}
		s.Served(l, 1, 1, lanes)
	}
	if served == 0 {
		t.Fatal("the low priority starved")
	}
	if served > 3 {
		t.Fatalf("the low priority was served %d times of %d", served, 3*Aging)
	}
}
