// Package worker runs generation jobs: it takes jobs from the JetStream
// work queue (high priority first) into a window, asks its Scheduler (the
// batching policy) which of them run together, claims each in the job
// record, and generates them through an Engine — as one batch on the
// device when the model is a BatchModel — with models kept in a model
// cache, streaming progress and previews per job and measuring the step
// latency per batch size for the scheduler. Finished jobs are
// post-processed, stored as PNGs and acknowledged in the background while
// the next batch runs; on shutdown running jobs get a grace period (or are
// handed back), and if the process dies their messages are redelivered.
package worker

import (
	"context"
	"image"
	"time"

	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/jobs"
)

// Request is what a model generates: one prompt, N images.
type Request struct {
	Prompt         string
	NegativePrompt string
	// Prompt2 and NegativePrompt2 go to a second text encoder (SDXL).
	Prompt2, NegativePrompt2 string
	Width, Height            int
	Steps                    int
	N                        int
	ClipSkip                 int
	Guidance                 float64
	Sampler                  string
	Seed                     uint64
	// SharedNoise draws all images' noise from one generator seeded with
	// Seed instead of one per image seeded Seed+i.
	SharedNoise bool
	// Micro is SDXL's micro-conditioning (zero: the model's defaults).
	Micro family.Micro
	// InitImage and Strength make an image-to-image request.
	InitImage image.Image
	Strength  float64
	// LoRAs and Embeddings are the job's installed LoRAs and the
	// embeddings its prompts name (the prompt still holds its <lora:…>
	// tags, which the engine removes).
	LoRAs      []jobs.LoRA
	Embeddings []jobs.Embedding
	// Edit holds inpainting, outpainting and variation-seed settings.
	Edit Edit
	// Hires is the hires fix (nil: off); the images come out at its size.
	Hires *jobs.Hires
}

// Edit is a request's inpainting, outpainting and variation-seed
// settings (see pipeline.Edit and pipeline.Variation).
type Edit struct {
	// Mask marks what to repaint in InitImage (white = repaint).
	Mask        image.Image
	MaskBlur    int
	InpaintFill string
	// Outpaint is the canvas growth: left, right, top, bottom pixels.
	Outpaint [4]int
	// FullRes inpaints the region around the mask, grown by
	// FullResPadding pixels, at the request's size.
	FullRes         bool
	FullResPadding  int
	Subseed         uint64
	SubseedStrength float64
}

// Progress reports one finished sampler step.
type Progress struct {
	Step, Steps int
	// Preview is a rough picture of the current prediction (may be nil).
	Preview image.Image
	// Eval identifies the model evaluation within one Generate or
	// GenerateBatch call (1, 2, …; 0: not reported): requests of a batch
	// reporting the same Eval shared it.
	Eval int
	// Batch is the number of images that evaluation ran (0: not reported;
	// the worker then assumes the request's own N).
	Batch int
	// StepTime is the evaluation's wall time (0: not reported; the worker
	// then measures the time since the previous report).
	StepTime time.Duration
}

// Result holds the generated images and the seed of each.
type Result struct {
	Images []image.Image
	Seeds  []uint64
}

// Model is a loaded model. Generate is called by one goroutine at a time.
type Model interface {
	// Generate makes req.N images, calling onProgress after every step,
	// and stops with ctx's error when ctx ends (at the next step).
	Generate(ctx context.Context, req Request, onProgress func(Progress)) (*Result, error)
	// Close releases the model's memory.
	Close() error
}

// BatchItem is one request of a batch.
type BatchItem struct {
	// Ctx cancels this request alone; the others of the batch go on.
	Ctx     context.Context
	Request Request
}

// BatchResult is one request's outcome in a batch.
type BatchResult struct {
	Result *Result
	Err    error
}

// BatchModel is a Model that generates several compatible requests (the
// batching policy's choice) as one batch on the device.
type BatchModel interface {
	Model
	// GenerateBatch runs the items together and returns their outcomes in
	// item order. onProgress gets the item's index. An item whose Ctx ends
	// fails with its error at the next step without disturbing the
	// others; ctx ending stops them all.
	GenerateBatch(ctx context.Context, items []BatchItem, onProgress func(item int, p Progress)) []BatchResult
}

// Engine loads models for one device.
type Engine interface {
	// Device names the device, e.g. "cpu" or "cuda:0".
	Device() string
	// Load loads a model.
	Load(ctx context.Context, m catalog.Model) (Model, error)
}

// StepModel is a Model that runs continuous (step-level) batching: a
// running batch that requests join between steps and leave when their
// last step is done. The worker prefers it to BatchModel.
type StepModel interface {
	Model
	// StartBatch starts an empty running batch; ctx ending makes every
	// request still in it leave with an error at the next Step.
	StartBatch(ctx context.Context) RunningBatch
}

// RunningBatch is a batch in flight on the device. Its methods are called
// by one goroutine at a time.
type RunningBatch interface {
	// Add prepares a request (text encoding, initial noise) and adds it:
	// it runs its first step at the next Step. onProgress is called after
	// each of its steps. The id names it in Step's results.
	Add(item BatchItem, onProgress func(Progress)) (id int, err error)
	// Step runs one step of every request in the batch and returns those
	// that left it (finished, canceled through their Ctx, or failed; a
	// request failing alone does not fail the others).
	Step() []StepDone
	// Len is the number of requests in the batch; Images their images.
	Len() int
	Images() int
	// Items describes the requests in the batch, in the order they joined.
	Items() []RunningItem
	// Memory reports the device memory free at this step boundary and the
	// activation peak of the last step, in bytes (0: unknown).
	Memory() (free, peak int64)
}

// StepDone is a request that left a running batch.
type StepDone struct {
	ID int
	BatchResult
	// Decode is the wall time of the VAE decode that finished it (shared
	// by the requests that finished in the same step).
	Decode time.Duration
}

// RunningItem describes a request in a running batch.
type RunningItem struct {
	ID, Images int
	// Remaining is the number of steps it still has to run.
	Remaining int
	// Job and Tenant name its job (filled by the worker; engines leave
	// them empty).
	Job, Tenant string
}

// Idler is an Engine with work to do between jobs (warming models up and
// tuning device kernels for shapes met, off any request's path). The
// worker calls Idle when no job is pending; more reports whether work is
// left. Each call should take well under a second: a job arriving waits
// for it.
type Idler interface {
	Idle(ctx context.Context) (more bool)
}
