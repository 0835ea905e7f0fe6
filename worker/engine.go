// Package worker runs generation jobs: it takes jobs from the JetStream
// work queue (high priority first), claims each in the job record,
// generates through an Engine with models kept in a model cache, streams
// progress and previews, stores the PNGs, and acknowledges — or hands the
// job back on shutdown, or leaves it to be redelivered if the process dies.
package worker

import (
	"context"
	"image"

	"github.com/kiln-project/kiln/server/models"
)

// Request is what a model generates: one prompt, N images.
type Request struct {
	Prompt         string
	NegativePrompt string
	Width, Height  int
	Steps          int
	N              int
	ClipSkip       int
	Guidance       float64
	Sampler        string
	Seed           uint64
	// InitImage and Strength make an image-to-image request.
	InitImage image.Image
	Strength  float64
}

// Progress reports one finished sampler step.
type Progress struct {
	Step, Steps int
	// Preview is a rough picture of the current prediction (may be nil).
	Preview image.Image
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

// Engine loads models for one device.
type Engine interface {
	// Device names the device, e.g. "cpu" or "cuda:0".
	Device() string
	// Load loads a model.
	Load(ctx context.Context, m models.Model) (Model, error)
}
