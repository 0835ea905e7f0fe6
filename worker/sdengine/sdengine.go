// Package sdengine adapts the native pipeline (core/pipeline) to the
// worker's Engine interface: it loads checkpoints of any model family
// (core/model/families) on a backend for one device, routes prompt encodings through the shared
// text-encoder cache, and converts requests, progress and results.
package sdengine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"

	"github.com/kiln-project/kiln/bench"
	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/checkpoint"
	"github.com/kiln-project/kiln/core/conditioning"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/core/model/families"
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/core/quant"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/sequential"
	"github.com/kiln-project/kiln/cuda"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/loralib"
	"github.com/kiln-project/kiln/worker"
	"github.com/kiln-project/kiln/worker/textcache"
)

// EncodeFunc encodes one prompt with the pipeline's text encoder.
type EncodeFunc = func(ctx context.Context, text string, opts conditioning.Options) (conditioning.Result, error)

// EncodeHook sits between the pipeline and its text encoder: it may answer
// from a cache or call encode.
type EncodeHook = func(ctx context.Context, text string, opts conditioning.Options, encode EncodeFunc) (conditioning.Result, error)

// encodeHooker is implemented by pipelines that let a hook intercept prompt
// encoding. The adapter installs the text cache through it when present.
type encodeHooker interface {
	SetEncodeHook(hook EncodeHook)
}

// Engine loads Stable Diffusion models for one device.
type Engine struct {
	device   string
	be       backend.Backend
	text     *textcache.Cache
	stateDir string // component-hash cache; "" for none
	lib      *loralib.Library
	loraOnce sync.Once
	lora     *loraStats
	layoutMu sync.Mutex
	layouts  map[string]lora.Modules // by model name: the LoRA layouts of models loaded so far

	mem     *memory.Manager // the device's memory manager; nil: no budget
	weights quant.Format    // denoiser weight storage (SetWeightPrecision)

	// background warm-up and tuning (GPU engines with a tuning folder)
	mu      sync.Mutex
	dev     *cuda.Device
	tuneDir string
	log     *slog.Logger
	warm    []warmJob
}

// New returns an engine for device ("cpu"; GPU devices arrive with the
// CUDA backend). text may be nil (no text-encoder cache).
func New(device string, text *textcache.Cache) (*Engine, error) {
	switch device {
	case "cpu", "auto":
		return &Engine{device: "cpu", be: cpu.New(), text: text}, nil
	}
	return nil, fmt.Errorf("sdengine: device %q is not available in this build (the CUDA backend is not wired yet); use --device cpu", device)
}

// Device implements worker.Engine.
func (e *Engine) Device() string { return e.device }

// Load implements worker.Engine.
func (e *Engine) Load(ctx context.Context, m catalog.Model) (worker.Model, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var cleanup func()
	cp, err := bench.SyntheticFamily(m.Path, 1) // synthetic:qwen-image, or nil
	if cp != nil || err != nil {
		// built in memory by its family
	} else if name, ok := strings.CutPrefix(m.Path, catalog.SyntheticPrefix); ok {
		// a random-weight SD architecture (the registry admits these only
		// when the operator enabled them)
		var cm *checkpoint.Model
		if cm, _, cleanup, err = bench.Synthetic(name, 1); err == nil {
			cp, err = families.FromCheckpoint(cm)
		}
	} else {
		cp, err = families.All().Open(m.Path, family.OpenOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("sdengine: %s: %w", m.Name, err)
	}
	if cleanup != nil {
		defer func() {
			if err != nil {
				cleanup()
			}
		}()
	}
	comps := cp.Components()
	hashes, err := e.componentHashes(m.Path, comps)
	if err != nil {
		cp.Close()
		return nil, fmt.Errorf("sdengine: %s: %w", m.Name, err)
	}
	// On a backend that groups weights the model's weights can be offloaded
	// and restored together, and weights identical to another model's are
	// held once; each component gets its own group where the family
	// builds components on their own views, so that a model too large for
	// the budget can load them one at a time (sequential loading).
	mcomps := components(comps, hashes, e.be)
	plan := e.plan(m, cp.Defaults(), mcomps)
	md, group, seq, err := e.build(cp, comps, plan)
	if err != nil {
		cp.Close()
		return nil, fmt.Errorf("sdengine: %s: %w", m.Name, err)
	}
	var fm family.Model = md
	if seq != nil {
		fm = seq
	}
	p, err := pipeline.New(fm)
	if err != nil {
		if group != nil {
			group.Close()
		}
		md.Close()
		return nil, fmt.Errorf("sdengine: %s: %w", m.Name, err)
	}
	hash := encoderHash(comps, hashes)
	mod := &Model{p: p, encoderHash: hash, group: group, seq: seq, be: e.be, cleanup: cleanup, comps: mcomps, adapters: newAdapters(e.lib, e.stats())}
	mod.plan = plan
	mod.stages = map[string]sequential.Stage{}
	for _, c := range comps {
		mod.stages[c.Kind] = sequential.StageOf(c)
	}
	if h, ok := any(p).(encodeHooker); ok && e.text != nil {
		h.SetEncodeHook(CacheHook(e.text, hash))
		mod.cached = true
	}
	e.recordLayout(m.Name, p.LoRAModules())
	e.warmUp(ctx, mod)
	return mod, nil
}

// CacheHook returns the hook that answers prompt encodings from cache,
// keyed by (encoder hash, prompt, clip skip, emphasis); long-prompt
// handling is part of the key through the options' LongPrompts flag.
func CacheHook(cache *textcache.Cache, encoderHash string) EncodeHook {
	return func(ctx context.Context, text string, opts conditioning.Options, encode EncodeFunc) (conditioning.Result, error) {
		enc := encoderHash
		if !opts.LongPrompts {
			enc += "/truncate"
		}
		key := textcache.Key{Encoder: enc, Prompt: text, Prompt2: opts.Text2, ClipSkip: max(opts.ClipSkip, 1), Emphasis: opts.Emphasis, Adapters: opts.Adapters}
		var res conditioning.Result
		v, err := cache.Get(key, func() (*textcache.Value, error) {
			r, err := encode(ctx, text, opts)
			if err != nil {
				return nil, err
			}
			res = r
			return &textcache.Value{Hidden: r.Hidden, HiddenShape: []int{1, r.Length, r.Dim}, Pooled: r.Pooled, Extra: r}, nil
		})
		if err != nil {
			return conditioning.Result{}, err
		}
		if r, ok := v.Extra.(conditioning.Result); ok {
			// Callers may modify Hidden (padding appends to it): hand out a copy.
			r.Hidden = append([]float32(nil), r.Hidden...)
			return r, nil
		}
		return res, nil
	}
}

// HashSource returns a content hash of a set of tensors: names, dtypes,
// shapes and bytes, in name order (the same weights hash the same whether
// they come from a diffusers folder or a single-file checkpoint).
func HashSource(src safetensors.Source) (string, error) {
	if src == nil {
		return "", errors.New("no tensors")
	}
	h := xxhash.New()
	names := src.Names()
	sort.Strings(names)
	var num [8]byte
	for _, n := range names {
		info, ok := src.Info(n)
		if !ok {
			return "", fmt.Errorf("tensor %s vanished", n)
		}
		h.WriteString(n)
		h.WriteString(info.DType)
		for _, d := range info.Shape {
			binary.LittleEndian.PutUint64(num[:], uint64(d))
			h.Write(num[:])
		}
		b, err := src.Bytes(n)
		if err != nil {
			return "", fmt.Errorf("tensor %s: %w", n, err)
		}
		h.Write(b)
	}
	return fmt.Sprintf("xxh64:%016x", h.Sum64()), nil
}

var _ worker.BatchModel = (*Model)(nil)

// Model is a loaded pipeline.
type Model struct {
	p           *pipeline.Pipeline
	be          backend.Backend
	cleanup     func() // removes a synthetic model's temporary files
	encoderHash string
	cached      bool
	group       backend.WeightGroup // nil: the backend does not group weights
	seq         *sequential.Model   // nil: the components share one group
	stages      map[string]sequential.Stage
	plan        loadPlan
	comps       []memory.Component
	adapters    *adapters
	closed      atomic.Bool
}

// Pipeline returns the underlying pipeline.
func (m *Model) Pipeline() *pipeline.Pipeline { return m.p }

// TextCacheActive reports whether prompt encodings go through the cache
// (the pipeline supports the encode hook).
func (m *Model) TextCacheActive() bool { return m.cached }

// EncoderHash is the content hash of the model's text encoder.
func (m *Model) EncoderHash() string { return m.encoderHash }

// Close implements worker.Model: the weights only this model holds are
// freed at once, then the model files are closed (and a synthetic model's
// temporary files removed).
func (m *Model) Close() error {
	if m.adapters != nil {
		m.adapters.close()
	}
	m.closed.Store(true)
	var gerr error
	if m.group != nil {
		gerr = m.group.Close()
	}
	err := errors.Join(gerr, m.p.Close())
	if m.cleanup != nil {
		m.cleanup()
	}
	return err
}

// request converts a worker request to the pipeline's.
func request(req worker.Request) pipeline.Request {
	return withEdit(req, pipeline.Request{
		Prompt: req.Prompt, NegativePrompt: req.NegativePrompt, Prompt2: req.Prompt2, NegativePrompt2: req.NegativePrompt2,
		Width: req.Width, Height: req.Height, Steps: req.Steps, N: req.N, ClipSkip: req.ClipSkip,
		Guidance: req.Guidance, Sampler: req.Sampler, Seed: req.Seed,
		InitImage: req.InitImage, Strength: req.Strength, Emphasis: true, SharedGenerator: req.SharedNoise && req.N > 1,
		Micro: req.Micro,
	})
}

// progress converts a pipeline progress report; the preview shows the
// request's first image.
func progress(p pipeline.Progress, n int) worker.Progress {
	wp := worker.Progress{Step: p.Step, Steps: p.Steps, Eval: p.Eval, Batch: p.Batch, StepTime: p.StepTime}
	if p.Preview != nil {
		wp.Preview = firstImage(p.Preview, n)
	}
	return wp
}

func result(res *pipeline.Result) *worker.Result {
	out := &worker.Result{Seeds: res.Seeds, Images: make([]image.Image, len(res.Images))}
	for i, im := range res.Images {
		out.Images[i] = im
	}
	return out
}

// Generate implements worker.Model.
func (m *Model) Generate(ctx context.Context, req worker.Request, onProgress func(worker.Progress)) (*worker.Result, error) {
	var cb func(pipeline.Progress)
	if onProgress != nil {
		cb = func(p pipeline.Progress) { onProgress(progress(p, req.N)) }
	}
	pr, err := m.request(req)
	if err != nil {
		return nil, err
	}
	res, err := m.p.Generate(ctx, pr, cb)
	if err != nil {
		return nil, err
	}
	return result(res), nil
}

// GenerateBatch implements worker.BatchModel through the pipeline's
// batch: one UNet call per step for all the requests' images; a canceled
// item's rows leave the batch at the next step.
func (m *Model) GenerateBatch(ctx context.Context, items []worker.BatchItem, onProgress func(int, worker.Progress)) []worker.BatchResult {
	jobs := make([]pipeline.BatchJob, 0, len(items))
	index := make([]int, 0, len(items)) // jobs[k] is items[index[k]]
	out := make([]worker.BatchResult, len(items))
	for i, it := range items {
		pr, err := m.request(it.Request)
		if err != nil {
			out[i].Err = err
			continue
		}
		jobs = append(jobs, pipeline.BatchJob{Ctx: it.Ctx, Request: pr})
		index = append(index, i)
	}
	if len(jobs) == 0 {
		return out
	}
	var cb func(int, pipeline.Progress)
	if onProgress != nil {
		cb = func(k int, p pipeline.Progress) { onProgress(index[k], progress(p, items[index[k]].Request.N)) }
	}
	res := m.p.GenerateBatch(ctx, jobs, cb)
	for k, r := range res {
		i := index[k]
		if r.Err != nil {
			out[i].Err = r.Err
			continue
		}
		out[i].Result = result(r.Result)
	}
	return out
}

// firstImage crops the first of n previews laid side by side.
func firstImage(im *image.RGBA, n int) image.Image {
	if n <= 1 {
		return im
	}
	b := im.Bounds()
	w := b.Dx() / n
	if w <= 0 {
		return im
	}
	return im.SubImage(image.Rect(b.Min.X, b.Min.Y, b.Min.X+w, b.Max.Y))
}
