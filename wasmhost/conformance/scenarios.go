package conformance

import (
	"context"
	"fmt"
	"strings"

	"github.com/kiln-project/kiln/wasmhost"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

// now is the fixed clock of every scenario (2025-01-01T00:00:00Z).
const now = int64(1_735_689_600_000_000)

func scenarios(h abi.Hook) []scenario {
	switch h {
	case abi.HookBatching:
		return batchingScenarios()
	case abi.HookEviction:
		return evictionScenarios()
	case abi.HookQuality:
		return qualityScenarios()
	case abi.HookNodePre:
		return preScenarios()
	case abi.HookNodePost:
		return postScenarios()
	}
	return nil
}

// BatchingInputs returns the batching scenarios' inputs by name.
func BatchingInputs() map[string]*abi.BatchingInput {
	base := func() *abi.BatchingInput {
		return &abi.BatchingInput{NowUS: now, Model: "sd15", CompatRules: []string{"model", "width", "height", "steps", "sampler"},
			MaxBatch: 8, MaxWaitUS: 200_000, FreeMemBytes: 16 << 30,
			StepLatency: []abi.StepLatency{{Batch: 1, LatencyUS: 28_000}, {Batch: 4, LatencyUS: 33_300}, {Batch: 8, LatencyUS: 53_100}},
			Tenants:     []abi.TenantShare{{Tenant: "acme", Weight: 3, Served: 120}, {Tenant: "globex", Weight: 1, Served: 8}, {Tenant: "initech", Weight: 1}}}
	}
	job := func(i int, key string) abi.Job {
		tenants := []string{"acme", "globex", "initech"}
		return abi.Job{ID: fmt.Sprintf("job-%04d", i), Tenant: tenants[i%3], Priority: int32(i % 5 / 4), ArrivalUS: now - int64(997*(i+1)),
			Width: 512, Height: 512, N: uint32(1 + i%2), Steps: 20, Sampler: "euler", CompatKey: key, MemBytes: 256 << 20}
	}
	out := map[string]*abi.BatchingInput{}
	one := base()
	one.Jobs = []abi.Job{job(0, "a")}
	out["one job"] = one
	mixed := base()
	for i := 0; i < 64; i++ {
		k := "sd15/512/20/euler"
		if i%4 == 3 {
			k = "sd15/768/30/dpmpp"
		}
		mixed.Jobs = append(mixed.Jobs, job(i, k))
	}
	out["64 jobs, two keys"] = mixed
	overdue := base()
	for i := 0; i < 5; i++ {
		j := job(i, "a")
		j.ArrivalUS = now - 10_000_000
		overdue.Jobs = append(overdue.Jobs, j)
	}
	out["overdue jobs"] = overdue
	big := base()
	j := job(0, "a")
	j.N = 20
	big.Jobs = []abi.Job{j, job(1, "a")}
	out["job larger than max_batch"] = big
	tight := base()
	tight.FreeMemBytes = 600 << 20
	for i := 0; i < 6; i++ {
		tight.Jobs = append(tight.Jobs, job(i, "a"))
	}
	out["little free memory"] = tight
	deadline := base()
	d := job(0, "a")
	d.DeadlineUS = now + 100_000
	deadline.Jobs = []abi.Job{d, job(1, "b")}
	out["deadline"] = deadline
	many := base()
	many.MaxBatch = 16
	for i := 0; i < 1000; i++ {
		many.Jobs = append(many.Jobs, job(i, fmt.Sprintf("k%d", i%7)))
	}
	out["1000 jobs"] = many
	return out
}

func batchingScenarios() []scenario {
	var out []scenario
	for _, name := range []string{"one job", "64 jobs, two keys", "overdue jobs", "job larger than max_batch", "little free memory", "deadline", "1000 jobs"} {
		in := BatchingInputs()[name]
		out = append(out, scenario{name, func(ctx context.Context, m *wasmhost.Module) (any, wasmhost.Outcome) {
			return m.CallBatching(ctx, in)
		}})
	}
	return out
}

// EvictionInputs returns the eviction scenarios' inputs by name.
func EvictionInputs() map[string]*abi.EvictionInput {
	models := func() []abi.Model {
		return []abi.Model{
			{ID: "sd15", Bytes: 2 << 30, LastUseUS: now - 60e6, Uses: 40, LoadUS: 3e6},
			{ID: "sd21", Bytes: 3 << 30, LastUseUS: now - 600e6, Uses: 2, LoadUS: 4e6},
			{ID: "sdxl", Bytes: 7 << 30, LastUseUS: now - 5e6, Uses: 9, LoadUS: 9e6, InUse: true},
			{ID: "lcm", Bytes: 2 << 30, LastUseUS: now - 3600e6, Uses: 1, LoadUS: 2e6},
			{ID: "vae-ft", Bytes: 1 << 28, LastUseUS: now - 1e6, Uses: 100, LoadUS: 3e5, Pinned: true},
		}
	}
	out := map[string]*abi.EvictionInput{}
	out["nothing needed"] = &abi.EvictionInput{NowUS: now, BudgetBytes: 20 << 30, UsedBytes: 14 << 30, Models: models()}
	out["one model needed"] = &abi.EvictionInput{NowUS: now, NeededBytes: 3 << 30, BudgetBytes: 16 << 30, UsedBytes: 14 << 30, HostFreeBytes: 8 << 30, Models: models()}
	out["more than evictable"] = &abi.EvictionInput{NowUS: now, NeededBytes: 30 << 30, BudgetBytes: 16 << 30, UsedBytes: 14 << 30, Models: models()}
	many := &abi.EvictionInput{NowUS: now, NeededBytes: 10 << 30, BudgetBytes: 80 << 30, UsedBytes: 78 << 30, HostFreeBytes: 4 << 30}
	for i := 0; i < 200; i++ {
		many.Models = append(many.Models, abi.Model{ID: fmt.Sprintf("m%03d", i), Bytes: uint64(1+i%5) << 28, LastUseUS: now - int64(i*7919%1000)*1e6,
			Uses: uint64(i % 13), LoadUS: uint64(1+i%4) * 1e6, Pinned: i%17 == 0, InUse: i%23 == 0})
	}
	out["200 models"] = many
	return out
}

func evictionScenarios() []scenario {
	var out []scenario
	for _, name := range []string{"nothing needed", "one model needed", "more than evictable", "200 models"} {
		in := EvictionInputs()[name]
		out = append(out, scenario{name, func(ctx context.Context, m *wasmhost.Module) (any, wasmhost.Outcome) {
			return m.CallEviction(ctx, in)
		}})
	}
	return out
}

// QualityInputs returns the quality scenarios' inputs by name.
func QualityInputs() map[string]*abi.QualityInput {
	base := func() *abi.QualityInput {
		return &abi.QualityInput{NowUS: now, Tenant: "acme", QueueDepth: 2, Running: 1, P50US: 900_000, P95US: 1_500_000, TargetP95US: 4_000_000,
			Request: abi.QualityParams{Steps: 30, Width: 768, Height: 512, Sampler: "dpmpp_2m", Profile: "balanced"},
			Limits: abi.QualityLimits{MinSteps: 10, MaxSteps: 50, MinWidth: 256, MaxWidth: 1024, MinHeight: 256, MaxHeight: 1024,
				SizeMultiple: 64, Samplers: []string{"euler", "dpmpp_2m"}, Profiles: []string{"speed_first", "balanced"}}}
	}
	out := map[string]*abi.QualityInput{}
	out["light load"] = base()
	over := base()
	over.P95US, over.QueueDepth, over.Level = 12_000_000, 40, 0.3
	out["overload"] = over
	sat := base()
	sat.P95US, sat.Level = 20_000_000, 1
	out["saturated"] = sat
	rec := base()
	rec.P95US, rec.QueueDepth, rec.Level = 500_000, 0, 0.8
	out["recovering"] = rec
	narrow := base()
	narrow.P95US, narrow.Level = 9_000_000, 0.6
	narrow.Limits.MinSteps, narrow.Limits.MaxSteps = 30, 30
	narrow.Limits.MinWidth, narrow.Limits.MaxWidth, narrow.Limits.MinHeight, narrow.Limits.MaxHeight = 768, 768, 512, 512
	out["no room to adjust"] = narrow
	return out
}

func qualityScenarios() []scenario {
	var out []scenario
	for _, name := range []string{"light load", "overload", "saturated", "recovering", "no room to adjust"} {
		in := QualityInputs()[name]
		out = append(out, scenario{name, func(ctx context.Context, m *wasmhost.Module) (any, wasmhost.Outcome) {
			return m.CallQuality(ctx, in)
		}})
	}
	return out
}

func preScenarios() []scenario {
	base := abi.PreInput{Node: "node", Tenant: "acme", Model: "sd15", Prompt: "a lighthouse on a cliff at dusk, oil painting",
		NegativePrompt: "blurry", Width: 512, Height: 512, Steps: 20, Guidance: 7.5, Sampler: "euler", Seed: 42}
	long := base
	long.Prompt = strings.Repeat("a very detailed prompt ", 400)
	uni := base
	uni.Prompt = "日本の城、桜、夕焼け — ÄÖÜ ✓"
	params := base
	params.Params = []abi.Param{{Key: "preset", Value: "photo"}, {Key: "words", Value: "x,y"}, {Key: "text", Value: "extra"}}
	var out []scenario
	for _, c := range []struct {
		name string
		in   abi.PreInput
	}{{"short prompt", base}, {"9 KB prompt", long}, {"unicode prompt", uni}, {"with parameters", params}} {
		in := c.in
		out = append(out, scenario{c.name, func(ctx context.Context, m *wasmhost.Module) (any, wasmhost.Outcome) {
			return m.CallNodePre(ctx, &in)
		}})
	}
	return out
}

func testImage(w, h uint32) abi.Image {
	im := abi.Image{Width: w, Height: h, Pix: make([]byte, 4*int(w)*int(h))}
	for y := uint32(0); y < h; y++ {
		for x := uint32(0); x < w; x++ {
			p := im.Pix[4*(y*w+x):]
			p[0], p[1], p[2], p[3] = byte(x), byte(y), byte(x^y), 255
		}
	}
	return im
}

func postScenarios() []scenario {
	var out []scenario
	for _, c := range []struct {
		name string
		w, h uint32
	}{{"1×1 image", 1, 1}, {"64×64 image", 64, 64}, {"512×512 image", 512, 512}, {"768×512 image", 768, 512}} {
		c := c
		out = append(out, scenario{c.name, func(ctx context.Context, m *wasmhost.Module) (any, wasmhost.Outcome) {
			// A fresh image per call: nodes may work in place.
			in := abi.PostInput{Node: "node", Tenant: "acme", Prompt: "a lighthouse", Seed: 42, Image: testImage(c.w, c.h),
				Params: []abi.Param{{Key: "width", Value: "32"}, {Key: "text", Value: "kiln"}}}
			return m.CallNodePost(ctx, &in)
		}})
	}
	return out
}
