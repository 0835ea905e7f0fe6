package pipeline

import (
	"context"
	"testing"
)

// BenchmarkGenerateFixture times a whole txt2img job (8 Euler steps with
// CFG, 64×64, decode included) on the tiny fixture model on the CPU.
func BenchmarkGenerateFixture(b *testing.B) {
	e := loadEnv(b)
	req := Request{Prompt: "a red circle on a blue background", Steps: 8, Guidance: 7.5, Seed: 1234,
		Width: 64, Height: 64, Sampler: "euler"}
	for i := 0; i < b.N; i++ {
		if _, err := e.pipe.Generate(context.Background(), req, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// fourJobs are four compatible single-image jobs (8 Euler steps with CFG,
// 64×64) with their own prompts and seeds.
func fourJobs() []BatchJob {
	prompts := []string{"a red circle", "a blue square", "a green triangle on a yellow background", "two white dots"}
	jobs := make([]BatchJob, len(prompts))
	for i, p := range prompts {
		jobs[i] = BatchJob{Request: Request{Prompt: p, NegativePrompt: "blurry", Steps: 8, Guidance: 7.5,
			Seed: uint64(100 + i), Width: 64, Height: 64, Sampler: "euler"}}
	}
	return jobs
}

// BenchmarkFourJobsSequential runs four compatible jobs one after
// another, as the worker did before cross-job batching.
func BenchmarkFourJobsSequential(b *testing.B) {
	e := loadEnv(b)
	jobs := fourJobs()
	for i := 0; i < b.N; i++ {
		for _, j := range jobs {
			if _, err := e.pipe.Generate(context.Background(), j.Request, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(4*b.N)/b.Elapsed().Seconds(), "images/s")
}

// BenchmarkFourJobsBatched runs the same four jobs as one batch.
func BenchmarkFourJobsBatched(b *testing.B) {
	e := loadEnv(b)
	jobs := fourJobs()
	for i := 0; i < b.N; i++ {
		for _, r := range e.pipe.GenerateBatch(context.Background(), jobs, nil) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	b.ReportMetric(float64(4*b.N)/b.Elapsed().Seconds(), "images/s")
}
