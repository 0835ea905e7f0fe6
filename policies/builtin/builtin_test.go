package builtin

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/wasmhost/abi"
)

const now = int64(1_000_000_000_000)

func job(id, tenant string, prio int32, ageUS int64, key string) abi.Job {
	return abi.Job{ID: id, Tenant: tenant, Priority: prio, ArrivalUS: now - ageUS, Width: 512, Height: 512, N: 1, Steps: 20, Sampler: "euler", CompatKey: key}
}

func lat(batch, us uint32) abi.StepLatency { return abi.StepLatency{Batch: batch, LatencyUS: us} }

func ids(in *abi.BatchingInput, out abi.BatchingOutput) []string {
	var s []string
	for _, i := range out.Jobs {
		s = append(s, in.Jobs[i].ID)
	}
	return s
}

func decide(t *testing.T, in *abi.BatchingInput) abi.BatchingOutput {
	t.Helper()
	out := Batching(in)
	if err := abi.ValidateBatching(in, &out); err != nil {
		t.Fatalf("builtin answer invalid: %v", err)
	}
	return out
}

func TestBatchingGroupsOnlyCompatibleJobs(t *testing.T) {
	in := &abi.BatchingInput{NowUS: now, MaxBatch: 8, MaxWaitUS: 100_000, Jobs: []abi.Job{
		job("a", "t", 0, 500_000, "k1"), job("b", "t", 0, 400_000, "k2"), job("c", "t", 0, 300_000, "k1"),
	}}
	out := decide(t, in)
	if out.Wait || fmt.Sprint(ids(in, out)) != "[a c]" {
		t.Fatalf("got %+v %v, want dispatch [a c]", out, ids(in, out))
	}
}

func TestBatchingPriorityThenFairnessThenArrival(t *testing.T) {
	in := &abi.BatchingInput{NowUS: now, MaxBatch: 1, MaxWaitUS: 1, Jobs: []abi.Job{
		job("old", "a", 0, 900, "k"), job("urgent", "b", 5, 10, "k"),
	}}
	if got := ids(in, decide(t, in)); fmt.Sprint(got) != "[urgent]" {
		t.Fatalf("priority: got %v", got)
	}
	// Equal priority: tenant a has been served much more, so b goes first
	// although a's job is older.
	in.Jobs[1].Priority = 0
	in.Tenants = []abi.TenantShare{{Tenant: "a", Weight: 1, Served: 100}, {Tenant: "b", Weight: 1, Served: 2}}
	if got := ids(in, decide(t, in)); fmt.Sprint(got) != "[urgent]" {
		t.Fatalf("fairness: got %v", got)
	}
	// Equal shares: first come, first served.
	in.Tenants = nil
	if got := ids(in, decide(t, in)); fmt.Sprint(got) != "[old]" {
		t.Fatalf("FCFS: got %v", got)
	}
}

func TestBatchingWeightedFairnessWithinBatch(t *testing.T) {
	in := &abi.BatchingInput{NowUS: now, MaxBatch: 8, MaxWaitUS: 1_000_000,
		Tenants: []abi.TenantShare{{Tenant: "big", Weight: 3}, {Tenant: "small", Weight: 1}}}
	for i := 0; i < 10; i++ {
		in.Jobs = append(in.Jobs, job(fmt.Sprintf("big%d", i), "big", 0, int64(1000-i), "k"))
		in.Jobs = append(in.Jobs, job(fmt.Sprintf("small%d", i), "small", 0, int64(1000-i), "k"))
	}
	out := decide(t, in)
	count := map[string]int{}
	for _, i := range out.Jobs {
		count[in.Jobs[i].Tenant]++
	}
	if out.Wait || count["big"] != 6 || count["small"] != 2 {
		t.Fatalf("got %v, want 6 big and 2 small (weights 3:1)", count)
	}
	// FCFS inside a tenant: the oldest jobs of each tenant are the ones taken.
	got := ids(in, out)
	sort.Strings(got)
	if fmt.Sprint(got) != "[big0 big1 big2 big3 big4 big5 small0 small1]" {
		t.Fatalf("got %v", got)
	}
}

func TestBatchingWaitsUntilMaxWait(t *testing.T) {
	in := &abi.BatchingInput{NowUS: now, MaxBatch: 4, MaxWaitUS: 200_000, Jobs: []abi.Job{job("a", "t", 0, 50_000, "k")}}
	out := decide(t, in)
	if !out.Wait || out.WaitUS != 150_000 {
		t.Fatalf("got %+v, want wait 150000 µs", out)
	}
	in.Jobs[0].ArrivalUS = now - 200_000
	if out := decide(t, in); out.Wait {
		t.Fatalf("job at max wait still waits: %+v", out)
	}
	// A full batch goes at once.
	in.Jobs = nil
	for i := 0; i < 4; i++ {
		in.Jobs = append(in.Jobs, job(fmt.Sprint(i), "t", 0, 10, "k"))
	}
	if out := decide(t, in); out.Wait || len(out.Jobs) != 4 {
		t.Fatalf("full batch: %+v", out)
	}
}

func TestBatchingUsesLatencyTable(t *testing.T) {
	in := &abi.BatchingInput{NowUS: now, MaxBatch: 8, MaxWaitUS: 200_000, Jobs: []abi.Job{job("a", "t", 0, 10, "k")}}
	// GPU-like: batch 4 costs little more than batch 1 → waiting pays.
	in.StepLatency = []abi.StepLatency{lat(1, 28_000), lat(4, 33_300), lat(8, 53_100)}
	if out := decide(t, in); !out.Wait {
		t.Fatalf("GPU latencies: want a wait, got %+v", out)
	}
	// CPU-like: latency linear in batch → no gain, dispatch now.
	in.StepLatency = []abi.StepLatency{lat(1, 100_000), lat(2, 200_000), lat(4, 400_000)}
	if out := decide(t, in); out.Wait {
		t.Fatalf("linear latencies: want dispatch, got %+v", out)
	}
}

func TestBatchingCapsImagesAndMemory(t *testing.T) {
	in := &abi.BatchingInput{NowUS: now, MaxBatch: 4, MaxWaitUS: 1, Jobs: []abi.Job{
		job("a", "t", 0, 30, "k"), job("b", "t", 0, 20, "k"), job("c", "t", 0, 10, "k"),
	}}
	in.Jobs[0].N, in.Jobs[1].N, in.Jobs[2].N = 2, 3, 2
	if got := ids(in, decide(t, in)); fmt.Sprint(got) != "[a]" {
		t.Fatalf("max_batch: got %v, want [a] (a+b = 5 images > 4)", got)
	}
	in.Jobs[0].N = 9 // oversized alone still runs
	if got := ids(in, decide(t, in)); fmt.Sprint(got) != "[a]" {
		t.Fatalf("oversized: got %v", got)
	}
	in.Jobs[0].N, in.Jobs[1].N, in.Jobs[2].N = 1, 1, 1
	for i := range in.Jobs {
		in.Jobs[i].MemBytes = 100
	}
	in.FreeMemBytes = 250
	if got := ids(in, decide(t, in)); fmt.Sprint(got) != "[a b]" {
		t.Fatalf("memory: got %v", got)
	}
}

func TestBatchingDeadlineForcesDispatch(t *testing.T) {
	in := &abi.BatchingInput{NowUS: now, MaxBatch: 4, MaxWaitUS: 1_000_000,
		StepLatency: []abi.StepLatency{lat(1, 10_000), lat(2, 11_000)},
		Jobs:        []abi.Job{job("a", "t", 0, 10, "k")}}
	in.Jobs[0].DeadlineUS = now + 20*11_000 // just the run time: no slack
	if out := decide(t, in); out.Wait {
		t.Fatalf("deadline: want dispatch, got %+v", out)
	}
	in.Jobs[0].DeadlineUS = now + 20*11_000 + 50_000
	out := decide(t, in)
	if !out.Wait || out.WaitUS != 50_000 {
		t.Fatalf("deadline slack: got %+v, want wait 50000", out)
	}
}

func TestBatchingOverdueJobElsewhereStopsWaiting(t *testing.T) {
	in := &abi.BatchingInput{NowUS: now, MaxBatch: 4, MaxWaitUS: 100_000, Jobs: []abi.Job{
		job("new", "t", 1, 10, "k1"), job("stale", "t", 0, 500_000, "k2"),
	}}
	out := decide(t, in)
	if out.Wait || fmt.Sprint(ids(in, out)) != "[new]" {
		t.Fatalf("got %+v", out)
	}
}

func model(id string, gb uint64, lastUse int64) abi.Model {
	return abi.Model{ID: id, Bytes: gb << 30, LastUseUS: lastUse, Uses: 1, LoadUS: 500_000}
}

func evict(t *testing.T, in *abi.EvictionInput) []string {
	t.Helper()
	out := Eviction(in)
	if err := abi.ValidateEviction(in, &out); err != nil {
		t.Fatalf("builtin answer invalid: %v", err)
	}
	var s []string
	for _, v := range out.Victims {
		a := "drop"
		if v.Offload {
			a = "offload"
		}
		s = append(s, in.Models[v.Index].ID+":"+a)
	}
	return s
}

func TestEvictionSizeAwareLRU(t *testing.T) {
	in := &abi.EvictionInput{NowUS: now, NeededBytes: 2 << 30, Models: []abi.Model{
		model("small-old", 1, 100), model("big", 4, 200), model("recent", 2, 900),
	}}
	// LRU walk takes small-old then big; big alone covers the need, so
	// small-old stays.
	if got := evict(t, in); fmt.Sprint(got) != "[big:drop]" {
		t.Fatalf("got %v", got)
	}
	// Pinned and in-use models are never victims.
	// The walk then needs small-old and recent; recent alone covers 2 GiB,
	// so small-old is given back.
	in.Models[1].Pinned = true
	if got := evict(t, in); fmt.Sprint(got) != "[recent:drop]" {
		t.Fatalf("got %v", got)
	}
	in.Models[2].InUse = true
	if got := evict(t, in); fmt.Sprint(got) != "[small-old:drop]" {
		t.Fatalf("got %v (not enough evictable: evict what can go)", got)
	}
	in.NeededBytes = 0
	if got := evict(t, in); len(got) != 0 {
		t.Fatalf("nothing needed: got %v", got)
	}
}

func TestEvictionOffloadsCostlyReusedModels(t *testing.T) {
	in := &abi.EvictionInput{NowUS: now, NeededBytes: 3 << 30, HostFreeBytes: 2 << 30, Models: []abi.Model{
		model("a", 2, 100), model("b", 2, 200),
	}}
	in.Models[0].Uses, in.Models[0].LoadUS = 5, 3_000_000
	in.Models[1].Uses, in.Models[1].LoadUS = 5, 3_000_000
	// Both go; only the first fits in host memory.
	if got := evict(t, in); fmt.Sprint(got) != "[a:offload b:drop]" {
		t.Fatalf("got %v", got)
	}
}

func qualityIn() *abi.QualityInput {
	return &abi.QualityInput{NowUS: now, Tenant: "t", QueueDepth: 1, Running: 1, P50US: 1e6, P95US: 2e6, TargetP95US: 4e6,
		Request: abi.QualityParams{Steps: 30, Width: 768, Height: 512, Sampler: "euler", Profile: "balanced"},
		Limits:  abi.QualityLimits{MinSteps: 10, MaxSteps: 50, MinWidth: 256, MaxWidth: 1024, MinHeight: 256, MaxHeight: 1024, SizeMultiple: 64}}
}

func TestQualityReducesUnderLoadAndRestores(t *testing.T) {
	in := qualityIn()
	out := Quality(in)
	if out.Params != in.Request || out.Level != 0 {
		t.Fatalf("light load changed the request: %+v", out)
	}
	// Overload: p95 twice the target, repeatedly.
	in.P95US = 8e6
	var levels []float64
	for i := 0; i < 6; i++ {
		out = Quality(in)
		if err := abi.ValidateQuality(in, &out); err != nil {
			t.Fatal(err)
		}
		in.Level = out.Level
		levels = append(levels, out.Level)
	}
	if in.Level != 1 {
		t.Fatalf("levels %v: want to saturate at 1", levels)
	}
	if out.Params.Steps != 15 || out.Params.Width != 576 || out.Params.Height != 384 {
		t.Fatalf("at level 1: %+v, want 15 steps 576×384", out.Params)
	}
	if out.Params.Sampler != "euler" || out.Params.Profile != "balanced" {
		t.Fatalf("sampler/profile changed: %+v", out.Params)
	}
	// Load falls: the level comes down step by step to the full request.
	in.P95US = 1e6
	for i := 0; i < 12; i++ {
		out = Quality(in)
		in.Level = out.Level
	}
	if out.Level != 0 || out.Params != in.Request {
		t.Fatalf("after recovery: %+v", out)
	}
}

func TestQualityRespectsTenantLimits(t *testing.T) {
	in := qualityIn()
	in.Level = 1
	in.P95US = 9e6
	in.Limits.MinSteps = 25
	in.Limits.MinWidth, in.Limits.MinHeight = 700, 500
	out := Quality(in)
	if err := abi.ValidateQuality(in, &out); err != nil {
		t.Fatal(err)
	}
	if out.Params.Steps != 25 || out.Params.Width != 704 || out.Params.Height != 512 {
		t.Fatalf("got %+v", out.Params)
	}
	// A backlog raises the level once p95 nears the target, not before.
	in = qualityIn()
	in.QueueDepth = 40
	if out := Quality(in); out.Level != 0 {
		t.Fatalf("backlog at low p95: level %v", out.Level)
	}
	in.P95US = 3.5e6
	if out := Quality(in); out.Level != 0.05 {
		t.Fatalf("backlog level %v, want 0.05", out.Level)
	}
}

// TestBatchingAdmission: with a running batch (ABI minor 1) jobs of any
// compatibility key join in priority then arrival order while the running
// and joining images fit max_batch and the measured activation memory;
// when none fits the answer is a wait.
func TestBatchingAdmission(t *testing.T) {
	in := &abi.BatchingInput{NowUS: 1000, MaxBatch: 8, MaxWaitUS: 1000,
		Running: []abi.RunningJob{{ID: "r", Tenant: "a", N: 3, RemainingSteps: 5}},
		Jobs: []abi.Job{
			{ID: "late", Tenant: "a", ArrivalUS: 900, N: 2, CompatKey: "x"},
			{ID: "early", Tenant: "a", ArrivalUS: 100, N: 2, CompatKey: "y"},
			{ID: "urgent", Tenant: "a", ArrivalUS: 950, N: 2, Priority: 2, CompatKey: "z"},
		}}
	out := Batching(in)
	if out.Wait || fmt.Sprint(out.Jobs) != "[2 1]" {
		t.Fatalf("admission %+v; want the urgent then the early job (3+2+2 images of 8)", out)
	}
	if err := abi.ValidateBatching(in, &out); err != nil {
		t.Fatal(err)
	}
	in.FreeMemBytes, in.ImageMemBytes = 4000, 1000 // 3 running + 2 would need 5000
	if out := Batching(in); !out.Wait {
		t.Fatalf("admission past free memory: %+v", out)
	}
}

// TestQualityKeepsLockedAndSaysWhy: locked parameters survive any load,
// the others shrink with a reason.
func TestQualityKeepsLockedAndSaysWhy(t *testing.T) {
	in := &abi.QualityInput{P95US: 20_000_000, TargetP95US: 4_000_000, Level: 0.9,
		Request: abi.QualityParams{Steps: 40, Width: 512, Height: 512, Sampler: "euler", Profile: "balanced"},
		Limits:  abi.QualityLimits{MinSteps: 1, MaxSteps: 50, MinWidth: 64, MaxWidth: 1024, MinHeight: 64, MaxHeight: 1024, SizeMultiple: 8},
		Locked:  abi.LockWidth | abi.LockHeight}
	out := Quality(in)
	if out.Params.Width != 512 || out.Params.Height != 512 {
		t.Fatalf("locked size changed: %+v", out.Params)
	}
	if out.Params.Steps >= 40 || !strings.Contains(out.Reason, "over the 4.0s target") {
		t.Fatalf("steps %d, reason %q", out.Params.Steps, out.Reason)
	}
	in.Locked = abi.LockSteps | abi.LockWidth | abi.LockHeight
	if out := Quality(in); out.Params != in.Request || out.Reason != "" {
		t.Fatalf("everything locked: %+v %q", out.Params, out.Reason)
	}
}
