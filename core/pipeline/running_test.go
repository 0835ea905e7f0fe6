package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// drain steps r until it is empty, adding joins[s] before step s, and
// returns each job's outcome by the index it had in joins' order, with the
// steps at which each job ran.
func drain(t *testing.T, r *Running, joins map[int][]BatchJob) (map[int]BatchResult, map[int][]int) {
	t.Helper()
	out := map[int]BatchResult{}
	ran := map[int][]int{}
	byID := map[int]int{}
	next, cur := 0, 0
	for s := 0; s < 100; s++ {
		cur = s
		for _, bj := range joins[s] {
			k := next
			next++
			id, err := r.Add(bj, func(pr Progress) { ran[k] = append(ran[k], cur) })
			if err != nil {
				out[k] = BatchResult{Err: err}
				continue
			}
			byID[id] = k
		}
		if r.Len() == 0 {
			if s > maxKey(joins) {
				return out, ran
			}
			continue
		}
		for _, f := range r.Step() {
			out[byID[f.ID]] = f.Result
		}
	}
	t.Fatal("running batch did not drain")
	return nil, nil
}

func maxKey(m map[int][]BatchJob) int {
	k := 0
	for s := range m {
		k = max(k, s)
	}
	return k
}

// TestRunningJoinsAndLeaves runs jobs that differ in sampler, step count,
// guidance, prompts, seeds, image count and strength through one running
// batch, joining at different steps; each job runs exactly its own
// evaluations from the step it joined, leaves when done, and comes out
// within 1e-5 of running alone.
func TestRunningJoinsAndLeaves(t *testing.T) {
	e := loadEnv(t)
	e.pipe.SetSchedulerConfig(schedulerFor(t, e.cases["txt2img_euler"]))
	init := make([]float32, 3*64*64)
	for i := range init {
		init[i] = float32(i%89) / 88
	}
	reqs := []Request{
		{Prompt: "a red circle", NegativePrompt: "blurry", Width: 64, Height: 64, Steps: 4, Guidance: 7.5, Seed: 1, Sampler: "euler"},
		{Prompt: "a blue square", Width: 64, Height: 64, Steps: 3, Guidance: 3, Seed: 2, N: 2, Sampler: "euler_a"},
		{Prompt: "two dots", Width: 64, Height: 64, Steps: 5, Guidance: 1, Seed: 3, Sampler: "dpmpp_2m"},
		{Prompt: "img2img", Width: 64, Height: 64, Steps: 4, Guidance: 5, Seed: 4, Sampler: "euler", InitPixels: init, Strength: 0.5},
		{Prompt: "a wide picture", Width: 64, Height: 32, Steps: 2, Guidance: 5, Seed: 5, Sampler: "ddim"},
	}
	joins := map[int][]BatchJob{
		0: {{Request: reqs[0]}, {Request: reqs[1]}},
		2: {{Request: reqs[2]}, {Request: reqs[3]}},
		3: {{Request: reqs[4]}},
	}
	r := e.pipe.NewRunning(context.Background())
	got, ran := drain(t, r, joins)
	want := map[int]string{0: "[0 1 2 3]", 1: "[0 1 2]", 2: "[2 3 4 5 6]", 3: "[2 3]", 4: "[3 4]"}
	for k, w := range want {
		if fmt.Sprint(ran[k]) != w {
			t.Errorf("job %d ran at steps %v, want %s", k, ran[k], w)
		}
	}
	res := make([]BatchResult, len(reqs))
	for k := range reqs {
		res[k] = got[k]
	}
	compareAlone(t, e, reqs, res, nil)
}

// TestRunningCancelAndBuckets cancels one job in the middle of a running
// batch (it leaves with its context's error, the others are unchanged),
// runs the batch with bucketed row counts (padding rows changes nothing),
// and stops every job when the batch's context ends.
func TestRunningCancelAndBuckets(t *testing.T) {
	e := loadEnv(t)
	e.pipe.SetSchedulerConfig(schedulerFor(t, e.cases["txt2img_euler"]))
	reqs := batchJobs("euler_a")
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	r := e.pipe.NewRunning(context.Background())
	var asked []int
	r.SetRowBuckets(func(rows int) int {
		asked = append(asked, rows)
		return 16
	})
	ids := make([]int, len(reqs))
	for k, req := range reqs {
		bj := BatchJob{Request: req}
		if k == 1 {
			bj.Ctx = ctx1
		}
		var err error
		if ids[k], err = r.Add(bj, nil); err != nil {
			t.Fatal(err)
		}
	}
	if r.Images() != 5 || r.Rows() != 9 || len(r.Items()) != 4 || r.Items()[1].Total != 4 {
		t.Fatalf("batch of %d images, %d rows, items %+v", r.Images(), r.Rows(), r.Items())
	}
	got := make([]BatchResult, len(reqs))
	for s := 0; r.Len() > 0; s++ {
		if s == 2 {
			cancel1()
		}
		for _, f := range r.Step() {
			for k, id := range ids {
				if id == f.ID {
					got[k] = f.Result
				}
			}
		}
	}
	if !errors.Is(got[1].Err, context.Canceled) {
		t.Fatalf("canceled job: %v", got[1].Err)
	}
	if fmt.Sprint(asked) != "[9 9 5 5]" {
		t.Fatalf("rows per step %v; want the canceled job's 4 rows gone after step 2", asked)
	}
	compareAlone(t, e, reqs, got, map[int]bool{1: true})

	ctx, cancel := context.WithCancel(context.Background())
	r = e.pipe.NewRunning(ctx)
	if _, err := r.Add(BatchJob{Request: reqs[0]}, nil); err != nil {
		t.Fatal(err)
	}
	cancel()
	fs := r.Step()
	if len(fs) != 1 || !errors.Is(fs[0].Result.Err, ErrBatchClosed) || r.Len() != 0 {
		t.Fatalf("after the batch's context ended: %+v", fs)
	}
	if _, err := e.pipe.NewRunning(context.Background()).Add(BatchJob{Request: Request{Width: 66}}, nil); err == nil {
		t.Fatal("an invalid job was added")
	}
}

// rowLimit is a CPU backend whose convolutions fail (as out of memory)
// above a batch of limit rows.
type rowLimit struct {
	backend.Backend
	limit *int
}

func (b rowLimit) Conv2D(x, w, bias *tensor.Tensor, p backend.Conv2DParams) *tensor.Tensor {
	if x.Dim(0) > *b.limit {
		backend.FailErr("conv2d", fmt.Errorf("%d rows: %w", x.Dim(0), backend.ErrOutOfMemory))
	}
	return b.Backend.Conv2D(x, w, bias, p)
}

// TestRunningSplitsOnOutOfMemory runs a batch on a device that fails
// (out of memory, injected) above two rows: the shared evaluation is
// split until it fits, so no job fails, each comes out as it would alone,
// and the pipeline reports the splits.
func TestRunningSplitsOnOutOfMemory(t *testing.T) {
	e := loadEnv(t)
	limit := 2
	p, err := Load(context.Background(), rowLimit{Backend: cpu.New(), limit: &limit}, fixtures.Require(t, "sd15-tiny/model"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.SetSchedulerConfig(schedulerFor(t, e.cases["txt2img_euler"]))
	small := Request{Prompt: "a red circle", Width: 64, Height: 64, Steps: 3, Guidance: 5, Seed: 1, Sampler: "euler"}
	big := Request{Prompt: "a blue square", Width: 64, Height: 64, Steps: 3, Guidance: 5, Seed: 2, N: 3, Sampler: "euler"}
	r := p.NewRunning(context.Background())
	got, _ := drain(t, r, map[int][]BatchJob{0: {{Request: small}, {Request: big}}})
	for k, g := range got {
		if g.Err != nil {
			t.Fatalf("job %d failed for memory: %v", k, g.Err)
		}
	}
	rep := p.TakeMemoryReport()
	if rep.Splits == 0 || rep.Chunk > 2 || rep.FreedOthers || rep.Sequential {
		t.Fatalf("report %+v: want splits down to 2 rows and no other step", rep)
	}
	compareAlone(t, e, []Request{small, big}, []BatchResult{got[0], got[1]}, nil)
}

// TestRunningMemoryLadder injects an out-of-memory failure that even one
// row meets: the pipeline frees the other models, then switches to
// sequential loading, retrying after each, and fails with a clear error
// only when neither helps.
func TestRunningMemoryLadder(t *testing.T) {
	e := loadEnv(t)
	req := Request{Prompt: "a red circle", Width: 64, Height: 64, Steps: 2, Guidance: 5, Seed: 1, Sampler: "euler"}
	for _, tc := range []struct {
		name                string
		freeHelps, seqHelps bool
		wantFreed, wantSeq  bool
		wantErr             bool
	}{
		{name: "free others", freeHelps: true, wantFreed: true},
		{name: "sequential", seqHelps: true, wantFreed: true, wantSeq: true},
		{name: "nothing helps", wantFreed: true, wantSeq: true, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit := 0
			p, err := Load(context.Background(), rowLimit{Backend: cpu.New(), limit: &limit}, fixtures.Require(t, "sd15-tiny/model"))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			p.SetSchedulerConfig(schedulerFor(t, e.cases["txt2img_euler"]))
			var calls []string
			p.SetMemoryRecovery(memory.Recovery{
				FreeOthers: func(context.Context) error {
					calls = append(calls, "free")
					if tc.freeHelps {
						limit = 8
					}
					return nil
				},
				Sequential: func(context.Context) error {
					calls = append(calls, "sequential")
					if tc.seqHelps {
						limit = 8
					}
					return nil
				},
			})
			got, _ := drain(t, p.NewRunning(context.Background()), map[int][]BatchJob{0: {{Request: req}}})
			rep := p.TakeMemoryReport()
			if rep.FreedOthers != tc.wantFreed || rep.Sequential != tc.wantSeq {
				t.Fatalf("report %+v, recovery calls %v", rep, calls)
			}
			if tc.wantErr {
				if !errors.Is(got[0].Err, memory.ErrOutOfMemory) || !strings.Contains(got[0].Err.Error(), "sequential loading") {
					t.Fatalf("want the memory manager's final error, got %v", got[0].Err)
				}
				return
			}
			if got[0].Err != nil {
				t.Fatalf("job failed: %v (recovery calls %v)", got[0].Err, calls)
			}
			compareAlone(t, e, []Request{req}, []BatchResult{got[0]}, nil)
		})
	}
}
