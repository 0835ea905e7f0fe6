package placement

import (
	"testing"
	"time"

	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/server/events"
)

func gpu(name string, queued int, models ...string) GPU {
	g := GPU{Worker: name, Queued: queued, Models: map[string]Tier{}}
	for _, m := range models {
		g.Models[m] = Device
	}
	return g
}

func TestStickToHolder(t *testing.T) {
	p := New(Config{})
	gpus := []GPU{gpu("g0", 1, "a"), gpu("g1", 0, "b")}
	if d := p.Decide("g1", gpus, "a", 0); d.Take || d.Holder != "g0" || d.Reason != ReasonLeave {
		t.Fatalf("g1 for a = %+v, want leave for g0", d)
	}
	if d := p.Decide("g0", gpus, "a", 0); !d.Take || d.Reason != ReasonResident {
		t.Fatalf("g0 for a = %+v, want take (resident)", d)
	}
	// Nobody holds c: whoever fetched it loads it.
	if d := p.Decide("g1", gpus, "c", 0); !d.Take || d.Reason != ReasonNoHolder {
		t.Fatalf("g1 for c = %+v, want take (no holder)", d)
	}
	// A copy in host memory is restored there rather than loaded here.
	gpus[0].Models["c"] = Host
	if d := p.Decide("g1", gpus, "c", 0); d.Take || d.Holder != "g0" {
		t.Fatalf("g1 for c offloaded on g0 = %+v, want leave for g0", d)
	}
	// A job that waited long enough is taken by anyone.
	if d := p.Decide("g1", gpus, "a", 5*time.Second); !d.Take || d.Reason != ReasonExpired {
		t.Fatalf("waited job = %+v, want take", d)
	}
	// Unknown worker or no model: today's behaviour.
	if d := p.Decide("gx", gpus, "a", 0); !d.Take {
		t.Fatalf("unknown worker = %+v, want take", d)
	}
	if d := p.Decide("g1", gpus, "", 0); !d.Take {
		t.Fatalf("no model = %+v, want take", d)
	}
}

func TestReplicateUnderLoad(t *testing.T) {
	p := New(Config{ReplicateAt: 4, LoadCost: 2})
	for q := 0; q < 4; q++ {
		gpus := []GPU{gpu("g0", q, "a"), gpu("g1", 0, "b")}
		if d := p.Decide("g1", gpus, "a", 0); d.Take {
			t.Fatalf("holder queue %d: g1 took a (%+v) before the threshold", q, d)
		}
	}
	gpus := []GPU{gpu("g0", 4, "a"), gpu("g1", 0, "b")}
	if d := p.Decide("g1", gpus, "a", 0); !d.Take || d.Reason != ReasonReplicate {
		t.Fatalf("holder queue 4 = %+v, want replicate", d)
	}
	// A busy or slow GPU does not replicate: the holder still starts sooner.
	gpus[1].Queued = 3
	if d := p.Decide("g1", gpus, "a", 0); d.Take || d.Reason != ReasonFasterGPU {
		t.Fatalf("busy g1 = %+v, want leave (faster holder)", d)
	}
	gpus[1].Queued = 0
	gpus[0].Speed = map[string]float64{"a": 10}
	gpus[1].Speed = map[string]float64{"a": 1}
	if d := p.Decide("g1", gpus, "a", 0); d.Take {
		t.Fatalf("slow g1 = %+v, want leave", d)
	}
	// Of two holders the one that starts sooner is named.
	gpus = []GPU{gpu("g0", 3, "a"), gpu("g1", 1, "a"), gpu("g2", 0)}
	if d := p.Decide("g2", gpus, "a", 0); d.Take || d.Holder != "g1" {
		t.Fatalf("g2 = %+v, want leave for g1", d)
	}
}

func TestSurplusWhenDemandFalls(t *testing.T) {
	p := New(Config{ReplicateAt: 4})
	gpus := []GPU{gpu("g0", 0, "a"), gpu("g1", 0, "a", "b")}
	gpus[0].Speed = map[string]float64{"a": 2}
	gpus[1].Speed = map[string]float64{"a": 1}
	// Busy: both copies earn their keep.
	for _, w := range []string{"g0", "g1"} {
		if p.Surplus(w, gpus, "a", 4) {
			t.Fatalf("%s surplus at demand 4", w)
		}
		if got := p.Demand(w, gpus, "a", 2, 4); got != 2 {
			t.Fatalf("%s demand = %d, want 2", w, got)
		}
	}
	// Demand fell: exactly one copy (the slower GPU's) is surplus.
	if p.Surplus("g0", gpus, "a", 1) || !p.Surplus("g1", gpus, "a", 1) {
		t.Fatal("want only g1 (slower) surplus at demand 1")
	}
	if got := p.Demand("g1", gpus, "a", 1, 1); got != 0 {
		t.Fatalf("surplus demand = %d, want 0 (evict first)", got)
	}
	// A single copy is never surplus.
	if p.Surplus("g1", gpus, "b", 0) {
		t.Fatal("only copy of b is surplus")
	}
	// Equal speeds: the greatest name lets go.
	gpus[0].Speed, gpus[1].Speed = nil, nil
	if p.Surplus("g0", gpus, "a", 0) || !p.Surplus("g1", gpus, "a", 0) {
		t.Fatal("want g1 surplus on a tie")
	}
}

func TestBoard(t *testing.T) {
	b := NewBoard(6 * time.Second)
	t0 := time.Unix(1000, 0)
	b.Observe(events.Heartbeat{Worker: "w1", Models: []string{"a"}, Queued: map[string]int{"a": 2, "b": 1},
		Speed:  map[string]float64{"a": 3},
		Memory: []memory.ModelUsage{{Model: "a", TierName: "gpu"}, {Model: "c", TierName: "host"}}}, t0)
	b.Observe(events.Heartbeat{Worker: "w0"}, t0.Add(5*time.Second))
	got := b.GPUs(t0.Add(5 * time.Second))
	if len(got) != 2 || got[0].Worker != "w0" || got[1].Worker != "w1" {
		t.Fatalf("board = %+v", got)
	}
	w1 := got[1]
	if w1.Models["a"] != Device || w1.Models["c"] != Host || w1.Models["b"] != Absent || w1.Queued != 3 ||
		w1.Waiting["b"] != 1 || w1.Speed["a"] != 3 {
		t.Fatalf("w1 = %+v", w1)
	}
	// w1 goes stale; w0 stops.
	if got := b.GPUs(t0.Add(7 * time.Second)); len(got) != 1 || got[0].Worker != "w0" {
		t.Fatalf("after stale: %+v", got)
	}
	b.Observe(events.Heartbeat{Worker: "w0", Stopped: true}, t0.Add(7*time.Second))
	if got := b.GPUs(t0.Add(7 * time.Second)); len(got) != 0 {
		t.Fatalf("after stop: %+v", got)
	}
}

func TestPlacer(t *testing.T) {
	now := time.Unix(2000, 0)
	b := NewBoard(time.Minute)
	b.Observe(events.Heartbeat{Worker: "w0", Models: []string{"a"}, Queued: map[string]int{"a": 1}}, now)
	b.Observe(events.Heartbeat{Worker: "w1", Models: []string{"a"}}, now)
	pl := NewPlacer(New(Config{MaxDefer: 3 * time.Second}), b, func() time.Time { return now })
	b.Observe(events.Heartbeat{Worker: "w1", Models: []string{"b"}}, now)
	if pl.Take("w1", "a", now.Add(-time.Second)) {
		t.Fatal("w1 took a job of w0's model")
	}
	if !pl.Take("w1", "a", now.Add(-3*time.Second)) {
		t.Fatal("w1 left a job that waited MaxDefer")
	}
	if !pl.Take("w0", "a", now) {
		t.Fatal("holder left its own model's job")
	}
	b.Observe(events.Heartbeat{Worker: "w1", Models: []string{"a", "b"}}, now)
	if pl.Demand("w1", "a", 0) != 0 || pl.Demand("w0", "a", 1) != 1 {
		t.Fatal("demand: want w1's idle copy of a surplus and w0's kept")
	}
}
