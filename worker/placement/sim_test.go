package placement

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// The simulation: GPUs that hold `slots` models each (LRU), run one job
// per tick and spend loadTicks loading a model they do not hold. A trace
// of jobs of three models arrives over time; round-robin sends job k to
// GPU k mod n, placement lets each GPU pull from the shared queue as a
// worker does (window of `window` jobs, a declined job handed back to the
// end of the queue and the GPU stops filling for that tick).

type simJob struct {
	model   string
	arrived int
}

type simGPU struct {
	name     string
	resident []string // LRU order, most recent last
	window   []simJob
	cur      *simJob
	busy     int
}

type simResult struct {
	loads, jobs, lastTick int
	totalWait             int
}

func (r simResult) loadsPer100() float64 { return float64(r.loads) * 100 / float64(r.jobs) }
func (r simResult) meanWait() float64    { return float64(r.totalWait) / float64(r.jobs) }

const (
	simSlots     = 1
	simLoadTicks = 3
	simWindow    = 4
)

// simTrace makes n jobs over three models (60/30/10 %) arriving 0–2 per
// tick (mean 0.8, below the two GPUs' capacity of 2), from seed.
func simTrace(n int, seed uint64) [][]simJob {
	r := rand.New(rand.NewPCG(seed, 22))
	var ticks [][]simJob
	for made := 0; made < n; {
		var t []simJob
		k := r.IntN(5) // 0..4 → 0,0,1,1,2 jobs
		for i := 0; i < k/2 && made < n; i++ {
			m := "c"
			switch x := r.IntN(10); {
			case x < 6:
				m = "a"
			case x < 9:
				m = "b"
			}
			t = append(t, simJob{model: m, arrived: len(ticks)})
			made++
		}
		ticks = append(ticks, t)
	}
	return ticks
}

// step runs g for one tick; it returns the loads it did and the finished
// job, if any.
func (g *simGPU) step(tick int, res *simResult) {
	if g.cur == nil && len(g.window) > 0 {
		j := g.window[0]
		g.window = g.window[1:]
		g.cur = &j
		res.totalWait += tick - j.arrived
		g.busy = 1
		if i := indexOf(g.resident, j.model); i >= 0 {
			g.resident = append(append(g.resident[:i:i], g.resident[i+1:]...), j.model)
		} else {
			res.loads++
			g.busy += simLoadTicks
			if len(g.resident) >= simSlots {
				g.resident = g.resident[1:]
			}
			g.resident = append(g.resident, j.model)
		}
	}
	if g.cur != nil {
		g.busy--
		if g.busy == 0 {
			g.cur = nil
			res.lastTick = tick
		}
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func (g *simGPU) state() GPU {
	s := GPU{Worker: g.name, Models: map[string]Tier{}, Waiting: map[string]int{}}
	for _, m := range g.resident {
		s.Models[m] = Device
	}
	for _, j := range g.window {
		s.Waiting[j.model]++
	}
	if g.cur != nil {
		s.Waiting[g.cur.model]++
	}
	for _, n := range s.Waiting {
		s.Queued += n
	}
	return s
}

func newSimGPUs(n int) []*simGPU {
	gs := make([]*simGPU, n)
	for i := range gs {
		gs[i] = &simGPU{name: fmt.Sprintf("g%d", i)}
	}
	return gs
}

func idle(gs []*simGPU) bool {
	for _, g := range gs {
		if g.cur != nil || len(g.window) > 0 {
			return false
		}
	}
	return true
}

func simRoundRobin(trace [][]simJob, nGPU int) simResult {
	gs := newSimGPUs(nGPU)
	var res simResult
	k := 0
	for tick := 0; tick < len(trace) || !idle(gs); tick++ {
		if tick < len(trace) {
			for _, j := range trace[tick] {
				gs[k%nGPU].window = append(gs[k%nGPU].window, j)
				k++
				res.jobs++
			}
		}
		for _, g := range gs {
			g.step(tick, &res)
		}
	}
	return res
}

func simPlacement(trace [][]simJob, nGPU int, p *Policy) simResult {
	gs := newSimGPUs(nGPU)
	var res simResult
	var queue []simJob
	for tick := 0; tick < len(trace) || len(queue) > 0 || !idle(gs); tick++ {
		if tick < len(trace) {
			queue = append(queue, trace[tick]...)
			res.jobs += len(trace[tick])
		}
		for _, g := range gs {
			for len(g.window)+btoi(g.cur != nil) < simWindow && len(queue) > 0 {
				states := make([]GPU, len(gs))
				for i, o := range gs {
					states[i] = o.state()
				}
				j := queue[0]
				queue = queue[1:]
				waited := time.Duration(tick-j.arrived) * time.Second
				if !p.Decide(g.name, states, j.model, waited).Take {
					queue = append(queue, j) // handed back
					break
				}
				g.window = append(g.window, j)
			}
		}
		for _, g := range gs {
			g.step(tick, &res)
		}
	}
	return res
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func simPolicy() *Policy {
	return New(Config{ReplicateAt: simWindow, LoadCost: simLoadTicks, MaxDefer: 20 * time.Second})
}

func TestFewerLoadsThanRoundRobin(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		tr := simTrace(1000, seed)
		rr := simRoundRobin(tr, 2)
		pl := simPlacement(tr, 2, simPolicy())
		if rr.jobs != 1000 || pl.jobs != 1000 {
			t.Fatalf("seed %d: jobs rr %d placement %d, want 1000", seed, rr.jobs, pl.jobs)
		}
		t.Logf("seed %d: loads/100 requests: placement %.1f, round-robin %.1f; mean wait (ticks) %.1f vs %.1f; done at tick %d vs %d",
			seed, pl.loadsPer100(), rr.loadsPer100(), pl.meanWait(), rr.meanWait(), pl.lastTick, rr.lastTick)
		if pl.loadsPer100() >= rr.loadsPer100() {
			t.Errorf("seed %d: placement %.1f loads per 100 requests, round-robin %.1f: want fewer", seed, pl.loadsPer100(), rr.loadsPer100())
		}
	}
}

func TestReplicatesPopularModelInSimulation(t *testing.T) {
	// Only model a, arriving faster than one GPU runs it: the second GPU
	// must load a too (a replica), and the work must finish no later than
	// on one GPU by far.
	var tr [][]simJob
	for tick := 0; tick < 200; tick++ {
		tr = append(tr, []simJob{{model: "a", arrived: tick}, {model: "a", arrived: tick}})
	}
	pl := simPlacement(tr, 2, simPolicy())
	if pl.loads != 2 {
		t.Fatalf("loads = %d, want 2 (the model on both GPUs, once each)", pl.loads)
	}
	// Sticky: a trickle of a's jobs stays on the one GPU that loaded it.
	tr = nil
	for tick := 0; tick < 200; tick++ {
		var jobs []simJob
		if tick%3 == 0 {
			jobs = append(jobs, simJob{model: "a", arrived: tick})
		}
		tr = append(tr, jobs)
	}
	if pl := simPlacement(tr, 2, simPolicy()); pl.loads != 1 {
		t.Fatalf("trickle loads = %d, want 1 (no replica without load)", pl.loads)
	}
}

// BenchmarkPlacementLoads reports model loads per 100 requests and the
// mean wait of placement and round-robin, three models on two GPUs.
func BenchmarkPlacementLoads(b *testing.B) {
	tr := simTrace(1000, 1)
	var rr, pl simResult
	for b.Loop() {
		rr = simRoundRobin(tr, 2)
		pl = simPlacement(tr, 2, simPolicy())
	}
	b.ReportMetric(pl.loadsPer100(), "loads/100req")
	b.ReportMetric(rr.loadsPer100(), "rr-loads/100req")
	b.ReportMetric(pl.meanWait(), "wait-ticks")
	b.ReportMetric(rr.meanWait(), "rr-wait-ticks")
}
