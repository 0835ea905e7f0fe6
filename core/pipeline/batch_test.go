package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kiln-project/kiln/core/conditioning"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// batchJobs are compatible jobs (one size, steps, sampler) that differ in
// everything a job keeps to itself: prompts, seeds, image counts, and
// guidance (one runs without the unconditional half).
func batchJobs(sampler string) []Request {
	base := Request{Width: 64, Height: 64, Steps: 4, Sampler: sampler, RNG: "cpu"}
	reqs := []Request{
		{Prompt: "a red circle", NegativePrompt: "blurry", Seed: 1, N: 1, Guidance: 7.5},
		{Prompt: "a blue square on a green background", NegativePrompt: "", Seed: 77, N: 2, Guidance: 7.5},
		{Prompt: "a yellow triangle", NegativePrompt: "lowres, bad anatomy", Seed: 5, N: 1, Guidance: 7.5, GuidanceRescale: 0.7},
		{Prompt: "two dots", Seed: 9, N: 1, Guidance: 1},
	}
	for i := range reqs {
		r := base
		r.Prompt, r.NegativePrompt, r.Seed, r.N = reqs[i].Prompt, reqs[i].NegativePrompt, reqs[i].Seed, reqs[i].N
		r.Guidance, r.GuidanceRescale = reqs[i].Guidance, reqs[i].GuidanceRescale
		reqs[i] = r
	}
	return reqs
}

// compareAlone checks that each batch result equals its job run alone.
func compareAlone(t *testing.T, e *fixtureEnv, reqs []Request, got []BatchResult, skip map[int]bool) {
	t.Helper()
	worst := 0.0
	for k, req := range reqs {
		if skip[k] {
			continue
		}
		if got[k].Err != nil {
			t.Fatalf("job %d: %v", k, got[k].Err)
		}
		alone, err := e.pipe.Generate(context.Background(), req, nil)
		if err != nil {
			t.Fatal(err)
		}
		lat := fixtures.RelErr(got[k].Result.Latents, alone.Latents)
		px := fixtures.RelErr(got[k].Result.Pixels, alone.Pixels)
		if lat > 1e-5 || px > 1e-5 || len(got[k].Result.Images) != alone.LatentShape[0] {
			t.Errorf("job %d in the batch differs from its run alone: latents %g, pixels %g, %d images", k, lat, px, len(got[k].Result.Images))
		}
		if fmt.Sprint(got[k].Result.Seeds) != fmt.Sprint(alone.Seeds) {
			t.Errorf("job %d: seeds %v, alone %v", k, got[k].Result.Seeds, alone.Seeds)
		}
		worst = max(worst, lat, px)
	}
	t.Logf("largest relative difference batch vs alone: %.2e", worst)
}

// TestGenerateBatchMatchesSeparateRuns runs four compatible jobs as one
// batch and checks every image against its job run alone, with a
// stochastic sampler (per-job noise during sampling) and a multistep one
// (per-job history), and that every evaluation ran all five images at
// once.
func TestGenerateBatchMatchesSeparateRuns(t *testing.T) {
	e := loadEnv(t)
	e.pipe.SetSchedulerConfig(schedulerFor(t, e.cases["txt2img_euler"]))
	for _, sampler := range []string{"euler_a", "dpmpp_2m"} {
		t.Run(sampler, func(t *testing.T) {
			reqs := batchJobs(sampler)
			jobs := make([]BatchJob, len(reqs))
			for i, r := range reqs {
				jobs[i] = BatchJob{Request: r}
			}
			steps := make([][]int, len(jobs))
			evals := map[int]int{}
			got := e.pipe.GenerateBatch(context.Background(), jobs, func(k int, pr Progress) {
				steps[k] = append(steps[k], pr.Step)
				if pr.Batch != 5 || pr.StepTime <= 0 {
					t.Errorf("job %d step %d: evaluation of %d images in %v; want all 5", k, pr.Step, pr.Batch, pr.StepTime)
				}
				evals[pr.Eval]++
				if b := pr.Preview.Bounds(); b.Dx() != reqs[k].N*64/e.pipe.Factor() {
					t.Errorf("job %d: preview %v, want its own %d images", k, b, reqs[k].N)
				}
			})
			for k := range jobs {
				if fmt.Sprint(steps[k]) != "[1 2 3 4]" {
					t.Errorf("job %d progress steps %v", k, steps[k])
				}
			}
			if len(evals) != 4 {
				t.Errorf("%d UNet evaluations for 4 steps, want 4 (one per step for the whole batch): %v", len(evals), evals)
			}
			compareAlone(t, e, reqs, got, nil)
		})
	}
}

// TestGenerateBatchMixedJobs batches jobs that cannot all share one call:
// another size, img2img with different strengths (joining late), an
// invalid job. Each still matches its run alone.
func TestGenerateBatchMixedJobs(t *testing.T) {
	e := loadEnv(t)
	e.pipe.SetSchedulerConfig(schedulerFor(t, e.cases["txt2img_euler"]))
	init := make([]float32, 3*64*64)
	for i := range init {
		init[i] = float32(i%97) / 96
	}
	reqs := []Request{
		{Prompt: "a red circle", Width: 64, Height: 64, Steps: 4, Guidance: 5, Seed: 3, Sampler: "euler"},
		{Prompt: "a wide picture", Width: 64, Height: 32, Steps: 4, Guidance: 5, Seed: 4, Sampler: "euler"},
		{Prompt: "img2img half", Width: 64, Height: 64, Steps: 4, Guidance: 5, Seed: 5, Sampler: "euler", InitPixels: init, Strength: 0.5},
		{Prompt: "x", Width: 66, Height: 64}, // invalid
		{Prompt: "img2img most", Width: 64, Height: 64, Steps: 4, Guidance: 5, Seed: 6, Sampler: "euler", InitPixels: init, Strength: 0.75},
	}
	jobs := make([]BatchJob, len(reqs))
	for i, r := range reqs {
		jobs[i] = BatchJob{Request: r}
	}
	batchOf := map[int][]int{} // eval → images
	var steps [5][]int
	got := e.pipe.GenerateBatch(context.Background(), jobs, func(k int, pr Progress) {
		batchOf[pr.Eval] = append(batchOf[pr.Eval], pr.Batch)
		steps[k] = append(steps[k], pr.Step)
	})
	if got[3].Err == nil || !strings.Contains(got[3].Err.Error(), "divisible") {
		t.Fatalf("invalid job: %v", got[3].Err)
	}
	if fmt.Sprint(steps[2]) != "[1 2]" || fmt.Sprint(steps[4]) != "[1 2 3]" || fmt.Sprint(steps[0]) != "[1 2 3 4]" {
		t.Fatalf("steps %v", steps)
	}
	// The last round: the 64×64 txt2img job and both img2img jobs share
	// one evaluation; the 64×32 job has its own.
	shared := 0
	for _, b := range batchOf {
		if len(b) == 3 && b[0] == 3 {
			shared++
		}
	}
	if shared != 2 {
		t.Fatalf("evaluations %v: want two rounds with three jobs in one call", batchOf)
	}
	compareAlone(t, e, reqs, got, map[int]bool{3: true})
}

// TestGenerateBatchCancelOneJob cancels one job in the middle of a batch:
// it fails with its context's error, its rows leave later evaluations, and
// the other jobs finish exactly as they would alone.
func TestGenerateBatchCancelOneJob(t *testing.T) {
	e := loadEnv(t)
	e.pipe.SetSchedulerConfig(schedulerFor(t, e.cases["txt2img_euler"]))
	reqs := batchJobs("euler_a")
	jobs := make([]BatchJob, len(reqs))
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	for i, r := range reqs {
		jobs[i] = BatchJob{Request: r}
	}
	jobs[1].Ctx = ctx1
	var after []int
	got := e.pipe.GenerateBatch(context.Background(), jobs, func(k int, pr Progress) {
		if k == 1 && pr.Step == 2 {
			cancel1()
		}
		if k == 0 && pr.Step > 2 {
			after = append(after, pr.Batch)
		}
	})
	if !errors.Is(got[1].Err, context.Canceled) || got[1].Result != nil {
		t.Fatalf("canceled job: %v", got[1].Err)
	}
	if fmt.Sprint(after) != "[3 3]" {
		t.Fatalf("evaluations after the cancel ran %v images; want 3 (the canceled job's 2 dropped)", after)
	}
	compareAlone(t, e, reqs, got, map[int]bool{1: true})
	// Cancelling the batch stops every job.
	ctx, cancel := context.WithCancel(context.Background())
	got = e.pipe.GenerateBatch(ctx, jobs[:2], func(k int, pr Progress) { cancel() })
	for k, r := range got {
		if !errors.Is(r.Err, context.Canceled) {
			t.Fatalf("job %d after the batch was canceled: %v", k, r.Err)
		}
	}
}

// TestEncodeHook checks that every prompt encoding goes through the hook,
// that a caching hook spares the encoder repeated negative prompts without
// changing the image, and that a hook's malformed answer is an error.
func TestEncodeHook(t *testing.T) {
	e := loadEnv(t)
	e.pipe.SetSchedulerConfig(schedulerFor(t, e.cases["txt2img_euler"]))
	defer e.pipe.SetEncodeHook(nil)
	req := Request{Prompt: "a red circle", NegativePrompt: "lowres, bad anatomy", Width: 64, Height: 64, Steps: 1, Guidance: 5, Seed: 2, SkipDecode: true}
	plain, err := e.pipe.Generate(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	var encoded atomic.Int32
	var seen []string
	cache := map[string]conditioning.Result{}
	e.pipe.SetEncodeHook(func(ctx context.Context, text string, opts conditioning.Options, encode EncodeFunc) (conditioning.Result, error) {
		seen = append(seen, text)
		key := fmt.Sprintf("%q/%+v", text, opts)
		if r, ok := cache[key]; ok {
			return r, nil
		}
		encoded.Add(1)
		r, err := encode(ctx, text, opts)
		cache[key] = r
		return r, err
	})
	first, err := e.pipe.Generate(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fixtures.RelErr(first.Latents, plain.Latents) != 0 {
		t.Fatal("the hook changed the result")
	}
	req.Prompt = "a blue square"
	if _, err := e.pipe.Generate(context.Background(), req, nil); err != nil {
		t.Fatal(err)
	}
	if encoded.Load() != 3 || len(seen) != 4 {
		t.Fatalf("%d encodings of %v; want 3 (the negative prompt once)", encoded.Load(), seen)
	}
	// A long prompt is padded with the empty chunk: the cached answers
	// must come out unchanged.
	req.Prompt = strings.Repeat("a red circle on a blue background, ", 12)
	before := len(cache[fmt.Sprintf("%q/%+v", req.NegativePrompt, conditioning.Options{LongPrompts: true})].Hidden)
	if _, err := e.pipe.Generate(context.Background(), req, nil); err != nil {
		t.Fatal(err)
	}
	if after := len(cache[fmt.Sprintf("%q/%+v", req.NegativePrompt, conditioning.Options{LongPrompts: true})].Hidden); after != before {
		t.Fatalf("padding changed the hook's answer: %d → %d values", before, after)
	}
	if seen[len(seen)-1] != "" {
		t.Fatalf("the padding chunk did not go through the hook: %q", seen)
	}
	e.pipe.SetEncodeHook(func(ctx context.Context, text string, opts conditioning.Options, encode EncodeFunc) (conditioning.Result, error) {
		return conditioning.Result{Hidden: []float32{1, 2, 3}, Length: 1, Dim: 3}, nil
	})
	if _, err := e.pipe.Generate(context.Background(), req, nil); err == nil || !strings.Contains(err.Error(), "encode hook") {
		t.Fatalf("malformed hook answer: %v", err)
	}
}
