package jobs

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"
)

// fairShares offers jobs of two tenants at 10:1 (ten of "heavy", one of
// "light" per round) with the given weights while the worker takes one job
// per round, and returns how many each got.
func fairShares(t *testing.T, rounds int, heavyWeight, lightWeight float64) map[string]int {
	t.Helper()
	s, _ := openStore(t)
	ctx := context.Background()
	q := s.FairQueue()
	q.ListEvery = 0
	got := map[string]int{}
	submit := func(tenant string, w float64) {
		j := newJob(tenant, PriorityNormal)
		j.Weight = w
		if err := s.Submit(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	queued := map[string]int{}
	for r := 0; r < rounds; r++ {
		for i := 0; i < 10; i++ {
			submit("heavy", heavyWeight)
		}
		submit("light", lightWeight)
		queued["heavy"] += 10
		queued["light"]++
		// Consumer counts settle a moment after a publish; this test is
		// about the order, so it lets them (settleLanes).
		settleLanes(t, s, queued)
		msg, err := q.Next(ctx, false)
		if err != nil || msg == nil {
			t.Fatalf("round %d: %v %v", r, msg, err)
		}
		var qm QueueMessage
		if err := json.Unmarshal(msg.Data(), &qm); err != nil {
			t.Fatal(err)
		}
		got[qm.Tenant]++
		queued[qm.Tenant]--
		if err := msg.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return got
}

// TestFairQueueEqualWeights: a tenant offering ten times the load of
// another gets the same throughput under contention when their weights
// are equal (within 10%).
func TestFairQueueEqualWeights(t *testing.T) {
	got := fairShares(t, 100, 1, 1)
	if r := float64(got["light"]) / float64(got["heavy"]); math.Abs(r-1) > 0.1 {
		t.Fatalf("10:1 offered at weights 1:1: %v (ratio %.2f)", got, r)
	}
}

// TestFairQueueWeights: weight 3 gets three times the throughput.
func TestFairQueueWeights(t *testing.T) {
	got := fairShares(t, 100, 3, 1)
	if r := float64(got["heavy"]) / float64(got["light"]); math.Abs(r-3)/3 > 0.1 {
		t.Fatalf("weights 3:1: %v (ratio %.2f)", got, r)
	}
}

// TestFairQueuePriorityWithinTenant: a tenant's high-priority job goes
// before its older normal one; another tenant's turn is not taken by it.
func TestFairQueuePriorityWithinTenant(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	q := s.FairQueue()
	q.ListEvery = 0
	normal := newJob("a", PriorityNormal)
	high := newJob("a", PriorityHigh)
	for _, j := range []*Job{normal, high} {
		if err := s.Submit(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	settleLanes(t, s, map[string]int{"a": 2})
	msg, err := q.Next(ctx, false)
	if err != nil || msg == nil {
		t.Fatal(msg, err)
	}
	var qm QueueMessage
	_ = json.Unmarshal(msg.Data(), &qm)
	if qm.ID != high.ID {
		t.Fatalf("took %s, want the high-priority job", qm.ID)
	}
	_ = msg.Ack()
	if waiting, _, err := s.QueueDepth(ctx); err != nil || waiting != 1 {
		t.Fatalf("queue depth %d %v", waiting, err)
	}
}

// settleLanes waits until the lanes' listed pending counts are the ones
// expected per tenant.
func settleLanes(t *testing.T, s *Store, want map[string]int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		lanes, err := s.Lanes(context.Background())
		got := map[string]int{}
		for _, l := range lanes {
			got[l.Tenant] += l.Pending
		}
		ok := err == nil
		for k, v := range want {
			ok = ok && got[k] == v
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lanes show %v, want %v (%v)", got, want, err)
		}
		time.Sleep(time.Millisecond)
	}
}
