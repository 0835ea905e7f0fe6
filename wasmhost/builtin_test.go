package wasmhost

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/kiln-project/kiln/policies/builtin"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

func sampleBatching(n int) *abi.BatchingInput {
	in := &abi.BatchingInput{NowUS: 1_700_000_000_000_000, Model: "sd15", CompatRules: []string{"model", "width", "height", "steps", "sampler"},
		MaxBatch: 8, MaxWaitUS: 150_000, FreeMemBytes: 8 << 30,
		StepLatency: []abi.StepLatency{{Batch: 1, LatencyUS: 28_000}, {Batch: 4, LatencyUS: 33_300}, {Batch: 8, LatencyUS: 53_100}},
		Tenants:     []abi.TenantShare{{Tenant: "acme", Weight: 2, Served: 40}, {Tenant: "globex", Weight: 1, Served: 10}, {Tenant: "initech", Weight: 1, Served: 0}}}
	tenants := []string{"acme", "globex", "initech"}
	for i := 0; i < n; i++ {
		size := uint32(512 + 256*(i%3/2))
		in.Jobs = append(in.Jobs, abi.Job{
			ID: fmt.Sprintf("job-%03d", i), Tenant: tenants[i%3], Priority: int32(i % 4 / 3),
			ArrivalUS: in.NowUS - int64(1000*(n-i)), Width: size, Height: size, N: uint32(1 + i%2), Steps: 20,
			Sampler: "euler", CompatKey: fmt.Sprintf("sd15/%d/20/euler", size), MemBytes: 300 << 20,
		})
	}
	return in
}

func TestBuiltinPoliciesMatchNative(t *testing.T) {
	h := newTestHost(t, Config{})
	m := loadBuiltinPolicies(t, h)
	ctx := context.Background()
	for _, n := range []int{1, 2, 7, 64, 300} {
		in := sampleBatching(n)
		got, o := m.CallBatching(ctx, in)
		if !o.OK() {
			t.Fatalf("batching %d jobs: %v %v", n, o.Result, o.Err)
		}
		if want := builtin.Batching(in); !reflect.DeepEqual(got, want) {
			t.Fatalf("batching %d jobs: wasm %+v, native %+v", n, got, want)
		}
	}
	ev := &abi.EvictionInput{NowUS: 1e15, NeededBytes: 3 << 30, BudgetBytes: 20 << 30, UsedBytes: 18 << 30, HostFreeBytes: 4 << 30, Models: []abi.Model{
		{ID: "a", Bytes: 2 << 30, LastUseUS: 10, Uses: 4, LoadUS: 2e6},
		{ID: "b", Bytes: 5 << 30, LastUseUS: 20, Uses: 1, LoadUS: 4e6},
		{ID: "c", Bytes: 1 << 30, LastUseUS: 5, Uses: 9, LoadUS: 9e6, Pinned: true},
		{ID: "d", Bytes: 3 << 30, LastUseUS: 30, Uses: 2, LoadUS: 1e6, InUse: true},
	}}
	gotE, o := m.CallEviction(ctx, ev)
	if !o.OK() || !reflect.DeepEqual(gotE, builtin.Eviction(ev)) {
		t.Fatalf("eviction: %+v %v %v, native %+v", gotE, o.Result, o.Err, builtin.Eviction(ev))
	}
	q := &abi.QualityInput{NowUS: 1e15, Tenant: "acme", QueueDepth: 9, Running: 1, P50US: 2e6, P95US: 7e6, TargetP95US: 4e6, Level: 0.4,
		Request: abi.QualityParams{Steps: 30, Width: 768, Height: 768, Sampler: "euler", Profile: "balanced"},
		Limits:  abi.QualityLimits{MinSteps: 8, MaxSteps: 50, MinWidth: 256, MaxWidth: 1024, MinHeight: 256, MaxHeight: 1024, SizeMultiple: 8}}
	for i := 0; i < 8; i++ {
		gotQ, o := m.CallQuality(ctx, q)
		if want := builtin.Quality(q); !o.OK() || !reflect.DeepEqual(gotQ, want) {
			t.Fatalf("quality step %d: %+v %v %v, native %+v", i, gotQ, o.Result, o.Err, want)
		}
		q.Level = gotQ.Level
	}
	if got := h.Metrics().Calls("builtin", abi.HookBatching, ResultOK); got != 5 {
		t.Fatalf("ok batching calls counted %d, want 5", got)
	}
}
