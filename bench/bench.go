package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/kiln-project/kiln/core/checkpoint"
	"github.com/kiln-project/kiln/core/conditioning"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/model/families"
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/cuda"
)

// Options configure a benchmark run.
type Options struct {
	Models     []string // model folders or files, or synthetic:NAME
	Batches    []int    // images per job
	Steps      int      // sampler steps
	Iterations int      // timed repetitions of each measurement
	Warmup     int      // untimed repetitions before (graph capture happens here)
	Guidance   float64  // classifier-free guidance scale
	Sampler    string   // sampler name ("" = euler)
	Size       int      // image side in pixels (0 = the model's default)
	Prompt     string
	Profile    bool // per-kernel breakdown of one UNet step (GPU only)
	Components bool // time text encoder, UNet step and VAE decode on their own
	Seed       uint64
}

// DefaultOptions returns the settings of the published numbers: 20 Euler
// steps, CFG 7.5, batches 1, 4 and 8, three timed iterations.
func DefaultOptions() Options {
	return Options{Batches: []int{1, 4, 8}, Steps: 20, Iterations: 3, Warmup: 1, Guidance: 7.5, Sampler: "euler",
		Prompt: "a photograph of an astronaut riding a horse", Components: true, Seed: 1}
}

// Stat summarises repeated timings in milliseconds.
type Stat struct {
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	Min float64 `json:"min_ms"`
	N   int     `json:"n"`
}

func stat(ds []time.Duration) Stat {
	if len(ds) == 0 {
		return Stat{}
	}
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d) / 1e6
	}
	sort.Float64s(ms)
	pct := func(p float64) float64 {
		i := int(p*float64(len(ms)-1) + 0.5)
		return ms[min(i, len(ms)-1)]
	}
	return Stat{P50: pct(0.5), P95: pct(0.95), Min: ms[0], N: len(ms)}
}

// Result is one model at one batch size.
type Result struct {
	Model           string        `json:"model"`
	Batch           int           `json:"batch"`
	Width           int           `json:"width"`
	Height          int           `json:"height"`
	Steps           int           `json:"steps"`
	LoadSeconds     float64       `json:"load_seconds"`
	TextEncoder     Stat          `json:"text_encoder"`
	UNetStep        Stat          `json:"unet_step_cfg"`
	VAEDecode       Stat          `json:"vae_decode"`
	StepInterval    Stat          `json:"pipeline_step"`
	FirstStep       Stat          `json:"pipeline_first_step"` // start to first step: prompts, noise, step 1
	DecodeTail      Stat          `json:"pipeline_decode"`     // last step to images: VAE and conversion
	EndToEnd        Stat          `json:"end_to_end"`
	ImagesPerSecond float64       `json:"images_per_second"`
	PeakBytes       int64         `json:"peak_device_bytes,omitempty"`
	Profile         []cuda.OpTime `json:"unet_step_profile,omitempty"`
	VAEProfile      []cuda.OpTime `json:"vae_decode_profile,omitempty"`
}

// Report is the whole run.
type Report struct {
	Date     string   `json:"date"`
	Device   string   `json:"device"`
	Reason   string   `json:"device_reason"`
	GPU      string   `json:"gpu,omitempty"`
	Driver   string   `json:"driver,omitempty"`
	Guidance float64  `json:"guidance"`
	Sampler  string   `json:"sampler"`
	Results  []Result `json:"results"`
	// Tuning lists the per-shape algorithm choices the GPU backend measured.
	Tuning []string `json:"tuning,omitempty"`
	// Stats are the GPU backend's counters at the end.
	Stats *cuda.Stats `json:"backend_stats,omitempty"`
}

// Run benchmarks every model at every batch size on sel's backend. prog
// receives progress (nil for none).
func Run(ctx context.Context, sel *cuda.Selection, opts Options, prog *Progress) (*Report, error) {
	if opts.Steps < 1 || opts.Iterations < 1 || len(opts.Models) == 0 || len(opts.Batches) == 0 {
		return nil, fmt.Errorf("bench: need models, batch sizes, steps ≥ 1 and iterations ≥ 1")
	}
	rep := &Report{Date: time.Now().UTC().Format(time.RFC3339), Device: sel.Backend.Name(), Reason: sel.Reason,
		Guidance: opts.Guidance, Sampler: opts.Sampler}
	if sel.Device != nil {
		in := sel.Device.Info()
		rep.GPU = fmt.Sprintf("%s (sm_%d%d, %d SMs, %.0f GiB)", in.Name, in.Major, in.Minor, in.SMs, float64(in.Memory)/(1<<30))
		rep.Driver = fmt.Sprintf("CUDA %d.%d, cuBLAS %d", in.Driver/1000, (in.Driver%1000)/10, in.CuBLASMajor)
	}
	perBatch := (opts.Warmup+opts.Iterations)*(opts.Steps+1) + 1
	if opts.Components {
		perBatch += 3 * (opts.Warmup + opts.Iterations + 1)
	}
	prog.start(len(opts.Models) * len(opts.Batches) * perBatch)
	for _, name := range opts.Models {
		res, err := runModel(ctx, sel, name, opts, prog)
		rep.Results = append(rep.Results, res...)
		if err != nil {
			prog.finish()
			return rep, err
		}
	}
	prog.finish()
	if sel.Device != nil {
		rep.Tuning = sel.Device.TuneLog()
		st := sel.Device.Stats()
		rep.Stats = &st
	}
	return rep, nil
}

func openModel(name string, seed uint64) (*checkpoint.Model, int, func(), error) {
	if s, ok := strings.CutPrefix(name, SyntheticPrefix); ok {
		return Synthetic(s, seed)
	}
	m, err := checkpoint.Load(name, checkpoint.Options{})
	return m, 0, func() {}, err
}

func runModel(ctx context.Context, sel *cuda.Selection, name string, opts Options, prog *Progress) ([]Result, error) {
	be := sel.Backend
	prog.describe(name + ": loading")
	t0 := time.Now()
	var (
		m       *checkpoint.Model
		size    int
		cleanup func()
		md      family.Model
	)
	cp, err := SyntheticFamily(name, opts.Seed)
	if err != nil {
		return nil, fmt.Errorf("bench: %s: %w", name, err)
	}
	if cp != nil {
		// a family checkpoint built in memory (synthetic:qwen-image): its
		// prompt and negative prompt differ in length, which the component
		// step timing does not take; end to end only
		if opts.Components || opts.Profile {
			cp.Close()
			return nil, fmt.Errorf("bench: %s: component timings and profiles need prompts of one length; time it end to end (--components=false)", name)
		}
		if md, err = cp.Build(be); err != nil {
			cp.Close()
			return nil, fmt.Errorf("bench: %s: %w", name, err)
		}
	} else {
		if m, size, cleanup, err = openModel(name, opts.Seed); err != nil {
			return nil, fmt.Errorf("bench: %s: %w", name, err)
		}
		defer cleanup()
		// components and profiles time the pipeline's own model
		cp, err := families.FromCheckpoint(m)
		if err == nil {
			md, err = cp.Build(be)
		}
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("bench: %s: %w", name, err)
		}
	}
	p, err := pipeline.New(md)
	if err != nil {
		md.Close()
		return nil, fmt.Errorf("bench: %s: %w", name, err)
	}
	defer p.Close()
	if sel.Device != nil {
		if err := sel.Device.Sync(); err != nil {
			return nil, err
		}
	}
	load := time.Since(t0).Seconds()
	if opts.Size > 0 {
		size = opts.Size
	}
	if size == 0 {
		size, _ = p.DefaultSize()
	}
	var comps *components
	if opts.Components || opts.Profile {
		comps = newComponents(md)
	}
	var out []Result
	for bi, b := range opts.Batches {
		r := Result{Model: name, Batch: b, Width: size, Height: size, Steps: opts.Steps, LoadSeconds: load}
		label := fmt.Sprintf("%s batch %d", name, b)
		if comps != nil {
			if err := comps.time(ctx, &r, opts, size/p.Factor(), prog, label); err != nil {
				return out, err
			}
			if opts.Profile && (bi == 0 || bi == len(opts.Batches)-1) && sel.Device != nil {
				prog.describe(label + ": profiling a UNet step")
				r.Profile, err = sel.Device.Profile(func() error {
					_, err := comps.unetStep(ctx, opts.Prompt, b, size/p.Factor())
					return err
				})
				if err != nil {
					return out, err
				}
				prog.describe(label + ": profiling a VAE decode")
				r.VAEProfile, err = sel.Device.Profile(func() error {
					return comps.decode(ctx, b, size/p.Factor())
				})
				if err != nil {
					return out, err
				}
			}
		}
		prog.describe(label + ": end to end")
		req := pipeline.Request{Prompt: opts.Prompt, Width: size, Height: size, Steps: opts.Steps, N: b,
			Guidance: opts.Guidance, Sampler: opts.Sampler, Seed: opts.Seed}
		if md.Defaults().Sampler != "" {
			req.Sampler = "" // the family samples with its own loop
		}
		var e2e, steps, heads, tails []time.Duration
		for it := 0; it < opts.Warmup+opts.Iterations; it++ {
			if sel.Device != nil {
				sel.Device.ResetPeak()
			}
			var last, first time.Time
			var iv []time.Duration
			start := time.Now()
			last = start
			_, err := p.Generate(ctx, req, func(pr pipeline.Progress) {
				now := time.Now()
				if pr.Step > 1 {
					iv = append(iv, now.Sub(last))
				} else {
					first = now
				}
				last = now
				prog.add(1)
			})
			if err != nil {
				return out, fmt.Errorf("bench: %s: %w", label, err)
			}
			end := time.Now()
			d := end.Sub(start)
			prog.add(1)
			if it >= opts.Warmup {
				e2e = append(e2e, d)
				steps = append(steps, iv...)
				heads = append(heads, first.Sub(start))
				tails = append(tails, end.Sub(last))
				if sel.Device != nil {
					r.PeakBytes = max(r.PeakBytes, sel.Device.Stats().Peak)
				}
			}
		}
		r.EndToEnd = stat(e2e)
		r.StepInterval = stat(steps)
		r.FirstStep = stat(heads)
		r.DecodeTail = stat(tails)
		if r.EndToEnd.P50 > 0 {
			r.ImagesPerSecond = float64(b) / (r.EndToEnd.P50 / 1000)
		}
		out = append(out, r)
		prog.add(1)
	}
	return out, nil
}

// components times the parts of the pipeline's own model alone, through
// the family seam (so every family, SD and SDXL alike): prompt encoding,
// one denoiser call with classifier-free guidance, and the latent decode.
type components struct {
	m   family.Model
	def family.Defaults
	rng *rand.Rand
	in  *stepInputs
	dec []float32 // random latents of the last decode shape
}

func newComponents(m family.Model) *components {
	return &components{m: m, def: m.Defaults(), rng: rand.New(rand.NewPCG(7, 7))}
}

func (c *components) randn(n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(c.rng.NormFloat64())
	}
	return out
}

// stepInputs are a denoiser step's inputs for one shape.
type stepInputs struct {
	b, s int
	in   family.DenoiseInput
}

// encodePair encodes the benchmark prompt and, unless the family
// conditions an empty negative prompt on zeros, the empty negative prompt,
// as the pipeline does.
func (c *components) encodePair(ctx context.Context, prompt string) (pos, neg conditioning.Result, err error) {
	if pos, err = c.m.Encode(ctx, prompt, conditioning.DefaultOptions()); err != nil {
		return pos, neg, err
	}
	if c.def.ZeroEmptyNegative {
		return pos, conditioning.Result{Hidden: make([]float32, len(pos.Hidden)), Length: pos.Length, Dim: pos.Dim,
			Pooled: make([]float32, len(pos.Pooled))}, nil
	}
	neg, err = c.m.Encode(ctx, "", conditioning.DefaultOptions())
	return pos, neg, err
}

// unetStep runs one denoiser evaluation with classifier-free guidance:
// 2·b rows (unconditional first) at latent side s, with the prompt's real
// conditioning and the family's extra conditioning for an s·factor image.
// Inputs are built once per shape, outside any timing.
func (c *components) unetStep(ctx context.Context, prompt string, b, s int) ([]float32, error) {
	if c.in == nil || c.in.b != b || c.in.s != s {
		pos, neg, err := c.encodePair(ctx, prompt)
		if err != nil {
			return nil, err
		}
		if neg.Length != pos.Length {
			return nil, fmt.Errorf("prompt and negative encode to %d and %d tokens", pos.Length, neg.Length)
		}
		side := s * c.def.Factor
		cond, uncond, err := c.m.Extra(family.ExtraInput{Width: side, Height: side})
		if err != nil {
			return nil, err
		}
		ch := c.def.LatentChannels
		if c.def.DenoiserChannels > 0 {
			ch = c.def.DenoiserChannels
		}
		n := 2 * b
		in := family.DenoiseInput{X: c.randn(n * ch * s * s), Shape: [4]int{n, ch, s, s}, ContextLen: pos.Length}
		for i := range n {
			r, e := neg, uncond
			if i >= b {
				r, e = pos, cond
			}
			in.Timesteps = append(in.Timesteps, 500)
			in.Context = append(in.Context, r.Hidden...)
			in.Pooled = append(in.Pooled, r.Pooled...)
			in.Extra = append(in.Extra, e...)
		}
		c.in = &stepInputs{b: b, s: s, in: in}
	}
	return c.m.Denoise(ctx, c.in.in)
}

// decode decodes b random latents of side s.
func (c *components) decode(ctx context.Context, b, s int) error {
	n := b * c.def.LatentChannels * s * s
	if len(c.dec) != n {
		c.dec = c.randn(n)
	}
	_, _, err := c.m.DecodeLatents(ctx, c.dec, [4]int{b, c.def.LatentChannels, s, s})
	return err
}

func (c *components) time(ctx context.Context, r *Result, opts Options, s int, prog *Progress, label string) error {
	reps := opts.Warmup + opts.Iterations
	var te, us, vd []time.Duration
	prog.describe(label + ": text encoder")
	for i := 0; i <= reps; i++ { // one extra warm-up: the graph is captured on the second run
		t := time.Now()
		if _, _, err := c.encodePair(ctx, opts.Prompt); err != nil {
			return err
		}
		if i > opts.Warmup {
			te = append(te, time.Since(t))
		}
		prog.add(1)
	}
	prog.describe(label + ": UNet step")
	for i := 0; i <= reps; i++ {
		t := time.Now()
		if _, err := c.unetStep(ctx, opts.Prompt, r.Batch, s); err != nil {
			return err
		}
		if i > opts.Warmup {
			us = append(us, time.Since(t))
		}
		prog.add(1)
	}
	prog.describe(label + ": VAE decode")
	for i := 0; i <= reps; i++ {
		t := time.Now()
		if err := c.decode(ctx, r.Batch, s); err != nil {
			return err
		}
		if i > opts.Warmup {
			vd = append(vd, time.Since(t))
		}
		prog.add(1)
	}
	r.TextEncoder, r.UNetStep, r.VAEDecode = stat(te), stat(us), stat(vd)
	return nil
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report as a readable table.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintln(w, r.Reason)
	if r.GPU != "" {
		fmt.Fprintf(w, "gpu %s, %s\n", r.GPU, r.Driver)
	}
	fmt.Fprintf(w, "%s, guidance %.1f, sampler %s\n\n", r.Date, r.Guidance, r.Sampler)
	fmt.Fprintf(w, "%-22s %5s %6s %8s %9s %10s %9s %9s %10s %10s %7s %9s %8s %8s\n",
		"model", "batch", "size", "load s", "text ms", "unet ms", "step ms", "vae ms", "e2e p50", "e2e p95", "img/s", "peak GiB", "head ms", "tail ms")
	for _, x := range r.Results {
		peak := "-"
		if x.PeakBytes > 0 {
			peak = fmt.Sprintf("%.2f", float64(x.PeakBytes)/(1<<30))
		}
		fmt.Fprintf(w, "%-22s %5d %6d %8.1f %9.1f %10.1f %9.1f %9.1f %10.1f %10.1f %7.2f %9s %8.1f %8.1f\n",
			x.Model, x.Batch, x.Width, x.LoadSeconds, x.TextEncoder.P50, x.UNetStep.P50, x.StepInterval.P50,
			x.VAEDecode.P50, x.EndToEnd.P50, x.EndToEnd.P95, x.ImagesPerSecond, peak, x.FirstStep.P50, x.DecodeTail.P50)
	}
	for _, x := range r.Results {
		printProfile(w, fmt.Sprintf("UNet step (CFG, batch %d), %s", x.Batch, x.Model), x.Profile)
		printProfile(w, fmt.Sprintf("VAE decode (batch %d), %s", x.Batch, x.Model), x.VAEProfile)
	}
	if r.Stats != nil {
		fmt.Fprintf(w, "\nbackend: %+v\n", *r.Stats)
	}
	if len(r.Tuning) > 0 {
		fmt.Fprintf(w, "\nmeasured algorithm choices:\n")
		for _, l := range r.Tuning {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
}

func printProfile(w io.Writer, title string, ops []cuda.OpTime) {
	if len(ops) == 0 {
		return
	}
	var total time.Duration
	for _, o := range ops {
		total += o.Time
	}
	fmt.Fprintf(w, "\n%s by kernel, device time %.2f ms:\n", title, float64(total)/1e6)
	for i, o := range ops {
		if i == 30 {
			fmt.Fprintf(w, "  … %d more\n", len(ops)-30)
			break
		}
		fmt.Fprintf(w, "  %-44s %5d calls %9.3f ms %5.1f%%\n", o.Name, o.Calls, float64(o.Time)/1e6, 100*float64(o.Time)/float64(total))
	}
}
