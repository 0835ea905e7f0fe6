package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"image"
	_ "image/jpeg" // init images may be JPEG
	_ "image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-project/kiln/bench"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/core/model/families"
	"github.com/kiln-project/kiln/core/modelhash"
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/sample"
	"github.com/kiln-project/kiln/cuda"
	"github.com/kiln-project/kiln/gateway/validate"
	"github.com/kiln-project/kiln/models"
	"github.com/kiln-project/kiln/server/config"
)

// generateFlags are the command-line settings of `kiln generate`.
type generateFlags struct {
	model, prompt, negative, prompt2, negative2, sampler, rngKind, initImage, output, latents, device, profile, tuningDir string
	refiner                                                                                                               string
	steps, width, height, n, clipSkip                                                                                     int
	guidance, rescale, strength, eta, refinerSwitch                                                                       float64
	seed                                                                                                                  int64
	emphasis, truncate                                                                                                    bool
	edit                                                                                                                  editFlags
	hires                                                                                                                 hiresFlags
	// set names the flags given on the command line (the model family's
	// defaults replace the profile's for the others).
	set map[string]bool
}

func parseGenerateFlags(args []string, stderr io.Writer) (*generateFlags, error) {
	f := &generateFlags{}
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.model, "model", "", "model: diffusers folder or single-file checkpoint, or synthetic:sd15 (random weights, for timing) (default: the built-in "+models.BuiltinName+")")
	fs.StringVar(&f.prompt, "prompt", "", "what to draw")
	fs.StringVar(&f.negative, "negative-prompt", "", "what not to draw")
	fs.StringVar(&f.prompt2, "prompt-2", "", "SDXL: the second text encoder's prompt (default: --prompt)")
	fs.StringVar(&f.negative2, "negative-prompt-2", "", "SDXL: the second text encoder's negative prompt (default: --negative-prompt)")
	defs, err := config.Default()
	if err != nil {
		return nil, err
	}
	profiles, err := config.Profiles()
	if err != nil {
		return nil, err
	}
	fs.StringVar(&f.profile, "profile", defs.DefaultProfile, "performance profile whose sampler, steps and guidance are the defaults (as kiln serve's): "+strings.Join(sortedNames(profiles), ", "))
	fs.IntVar(&f.steps, "steps", 0, fmt.Sprintf("inference steps, 1..%d (default: the profile's)", pipeline.MaxSteps))
	fs.Float64Var(&f.guidance, "guidance", 0, fmt.Sprintf("classifier-free guidance scale, 0..%g; ≤ 1 turns it off (default: the profile's)", validate.MaxGuidance))
	fs.Float64Var(&f.rescale, "guidance-rescale", 0, "guidance rescale φ in [0, 1]")
	fs.StringVar(&f.sampler, "sampler", "", "sampler: "+strings.Join(sample.Names(), ", ")+", or model (the model's own scheduler) (default: the profile's)")
	fs.Float64Var(&f.eta, "eta", 0, "DDIM eta (stochasticity)")
	fs.Int64Var(&f.seed, "seed", -1, "seed of the first image (image i uses seed+i); -1 picks one at random")
	fs.StringVar(&f.rngKind, "rng", "cpu", "noise generator: cpu (torch CPU, as ComfyUI) or cuda (torch CUDA Philox, as AUTOMATIC1111)")
	fs.IntVar(&f.width, "width", 0, "image width in pixels (default: the model's, or the init image's)")
	fs.IntVar(&f.height, "height", 0, "image height in pixels")
	fs.IntVar(&f.n, "n", 1, "number of images, generated as one batch")
	fs.StringVar(&f.initImage, "init-image", "", "init image (PNG or JPEG) for img2img")
	fs.Float64Var(&f.strength, "strength", 0.75, "img2img denoising strength in (0, 1]")
	fs.IntVar(&f.clipSkip, "clip-skip", 0, "text encoder layers to skip from the end (A1111 numbering: 2 = penultimate)")
	fs.StringVar(&f.output, "output", "", "output PNG (several images get numbered names; default kiln-<seed>.png unless --save-latents is given)")
	fs.StringVar(&f.latents, "save-latents", "", "write the final latents (n, C, h/f, w/f) as tensor \"latents\" to this safetensors file")
	fs.BoolVar(&f.emphasis, "emphasis", true, "parse the (word:1.2) emphasis syntax; false tokenizes the prompt literally")
	fs.BoolVar(&f.truncate, "truncate", false, "cut prompts to 75 tokens (as diffusers) instead of encoding further chunks")
	fs.StringVar(&f.tuningDir, "tuning-dir", defaultTuningDir(), "folder of stored GPU kernel choices, loaded first and saved after the run (empty: none)")
	fs.StringVar(&f.refiner, "refiner", "", "refiner model (an SDXL refiner): the model denoises until --refiner-switch, the refiner finishes")
	fs.Float64Var(&f.refinerSwitch, "refiner-switch", 0.8, "fraction of the schedule the model runs before the refiner takes over, in (0, 1)")
	f.edit.register(fs)
	f.hires.register(fs)
	fs.StringVar(&f.device, "device", "auto", "compute device: auto (the first GPU when a CUDA driver and cuBLAS are found, else the CPU), cpu, or cuda:N")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "usage: kiln generate [--model DIR|FILE] --prompt TEXT [flags]\n\nflags:")
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected argument %q (flags only)", fs.Arg(0))}
	}
	// One defaults source: the performance profile kiln serve uses.
	pr, ok := profiles[f.profile]
	if !ok {
		return nil, usageError{fmt.Errorf("--profile %q: want one of %s", f.profile, strings.Join(sortedNames(profiles), ", "))}
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	f.set = set
	if !set["steps"] {
		f.steps = pr.Steps
	}
	if !set["guidance"] {
		f.guidance = pr.Guidance
	}
	if !set["sampler"] {
		f.sampler = pr.Sampler
	}
	if f.sampler == "model" {
		f.sampler = ""
	}
	switch {
	case f.rngKind != "cpu" && f.rngKind != "cuda":
		return nil, usageError{fmt.Errorf("--rng %q: want cpu or cuda", f.rngKind)}
	case !validDevice(f.device):
		return nil, usageError{fmt.Errorf("--device %q: want auto, cpu or cuda:N", f.device)}
	case f.n < 1 || f.n > pipeline.MaxImages:
		return nil, usageError{fmt.Errorf("-n %d: want 1..%d", f.n, pipeline.MaxImages)}
	case f.steps < 1 || f.steps > pipeline.MaxSteps:
		return nil, usageError{fmt.Errorf("--steps %d: want 1..%d", f.steps, pipeline.MaxSteps)}
	case math.IsNaN(f.guidance) || f.guidance < 0 || f.guidance > validate.MaxGuidance:
		return nil, usageError{fmt.Errorf("--guidance %v: want 0..%g", f.guidance, validate.MaxGuidance)}
	case f.width < 0 || f.width > validate.MaxSide || f.height < 0 || f.height > validate.MaxSide:
		// (the model's VAE factor decides divisibility, checked on load)
		return nil, usageError{fmt.Errorf("--width %d --height %d: want sides up to %d (0: the model's)", f.width, f.height, validate.MaxSide)}
	case f.seed < -1 || f.seed > validate.MaxSeed:
		return nil, usageError{fmt.Errorf("--seed %d: want 0..%d, or -1 for a random one", f.seed, int64(validate.MaxSeed))}
	case f.clipSkip < 0 || f.clipSkip > validate.MaxClipSkip:
		return nil, usageError{fmt.Errorf("--clip-skip %d: want 0..%d", f.clipSkip, validate.MaxClipSkip)}
	case f.initImage != "" && !(f.strength > 0 && f.strength <= 1):
		return nil, usageError{fmt.Errorf("--strength %v: want a value in (0, 1]", f.strength)}
	case f.rescale < 0 || f.rescale > 1:
		return nil, usageError{fmt.Errorf("--guidance-rescale %v: want a value in [0, 1]", f.rescale)}
	case math.IsNaN(f.eta) || f.eta < 0 || f.eta > 1:
		return nil, usageError{fmt.Errorf("--eta %v: want 0..1", f.eta)}
	}
	if err := f.edit.check(f.initImage, set); err != nil {
		return nil, usageError{err}
	}
	if err := f.hires.check(f.initImage, set); err != nil {
		return nil, usageError{err}
	}
	if f.sampler != "" {
		known := false
		for _, n := range sample.Names() {
			known = known || n == strings.ToLower(f.sampler)
		}
		if !known {
			return nil, usageError{fmt.Errorf("--sampler %q is unknown (known: %s)", f.sampler, strings.Join(sample.Names(), ", "))}
		}
	}
	return f, nil
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// validDevice reports whether a --device value is well formed.
func validDevice(spec string) bool {
	_, _, err := cuda.ParseDevice(spec)
	return err == nil
}

func runGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseGenerateFlags(args, stderr)
	if err != nil {
		return err
	}
	seed := uint64(f.seed)
	if f.seed < 0 {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("random seed: %w", err)
		}
		seed = uint64(binary.LittleEndian.Uint32(b[:]))
	}
	req := pipeline.Request{
		Prompt: f.prompt, NegativePrompt: f.negative, Prompt2: f.prompt2, NegativePrompt2: f.negative2, Width: f.width, Height: f.height, Steps: f.steps,
		N: f.n, ClipSkip: f.clipSkip, Guidance: f.guidance, GuidanceRescale: f.rescale, Sampler: strings.ToLower(f.sampler),
		Eta: f.eta, Seed: seed, RNG: f.rngKind, Emphasis: f.emphasis, Truncate: f.truncate,
		SkipDecode: f.output == "" && f.latents != "",
	}
	if f.initImage != "" {
		im, err := loadImage(f.initImage)
		if err != nil {
			return err
		}
		req.InitImage, req.Strength = im, f.strength
	}
	if err := f.edit.apply(&req); err != nil {
		return err
	}
	if req.Hires, err = f.hires.parse(); err != nil {
		return err
	}
	sel, err := cuda.Select(f.device)
	if err != nil {
		return err
	}
	defer sel.Close()
	be := sel.Backend
	start := time.Now()
	if f.model == "" {
		if f.model, err = models.BuiltinPath(); err != nil {
			return err
		}
	}
	if sel.Device != nil && f.tuningDir != "" {
		// kernel choices measured before (by bench, serve or generate) on
		// this GPU, driver and kernel image; saved back afterwards
		if _, err := sel.Device.LoadTuning(f.tuningDir); err != nil {
			fmt.Fprintf(stderr, "stored kernel tuning not used: %v\n", err)
		}
		defer func() {
			if err := sel.Device.SaveTuning(f.tuningDir); err != nil {
				fmt.Fprintf(stderr, "saving kernel tuning: %v\n", err)
			}
		}()
	}
	var p *pipeline.Pipeline
	if cp, err := bench.SyntheticFamily(f.model, 1); err != nil {
		return fmt.Errorf("load model %s: %w", f.model, err)
	} else if cp != nil {
		// a random-weight family checkpoint built in memory (synthetic:qwen-image)
		md, err := cp.Build(be)
		if err != nil {
			cp.Close()
			return fmt.Errorf("load model %s: %w", f.model, err)
		}
		if p, err = pipeline.New(md); err != nil {
			md.Close()
			return fmt.Errorf("load model %s: %w", f.model, err)
		}
	} else if name, ok := strings.CutPrefix(f.model, bench.SyntheticPrefix); ok {
		// a random-weight architecture, for timing without a download
		cm, _, cleanup, err := bench.Synthetic(name, 1)
		if err != nil {
			return err
		}
		defer cleanup()
		cp, err := families.FromCheckpoint(cm)
		if err != nil {
			cm.Close()
			return fmt.Errorf("load model %s: %w", f.model, err)
		}
		md, err := cp.Build(be)
		if err != nil {
			cp.Close()
			return fmt.Errorf("load model %s: %w", f.model, err)
		}
		if p, err = pipeline.New(md); err != nil {
			md.Close()
			return fmt.Errorf("load model %s: %w", f.model, err)
		}
	} else if p, err = pipeline.Load(ctx, be, f.model); err != nil {
		return fmt.Errorf("load model %s: %w", f.model, err)
	}
	defer p.Close()
	familyDefaults(&req, p.Model().Defaults(), f.set)
	var refiner *pipeline.Pipeline
	if f.refiner != "" {
		if f.initImage != "" {
			return usageError{fmt.Errorf("--refiner starts from noise; it does not combine with --init-image")}
		}
		if refiner, err = pipeline.Load(ctx, be, f.refiner); err != nil {
			return fmt.Errorf("load refiner %s: %w", f.refiner, err)
		}
		defer refiner.Close()
	}
	loaded := time.Since(start)
	bar := newProgressBar(stderr)
	var res *pipeline.Result
	if refiner != nil {
		res, err = pipeline.Refine(ctx, p, refiner, req, f.refinerSwitch, bar.update)
	} else {
		res, err = p.Generate(ctx, req, bar.update)
	}
	bar.finish()
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(stderr, "kiln generate: warning: %s\n", w)
	}
	elapsed := time.Since(start)
	if f.latents != "" {
		if err := saveLatents(f.latents, res); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s\n", f.latents)
	}
	if !req.SkipDecode {
		out := f.output
		if out == "" {
			out = fmt.Sprintf("kiln-%d.png", seed)
		}
		var hashes modelhash.Cache
		hash, err := hashes.Short(ctx, f.model)
		if err != nil {
			hash = "" // the parameters leave the field out
		}
		for i, im := range res.Images {
			path := numberedPath(out, i, len(res.Images))
			params := generationParameters(f, req, res, i, hash)
			if err := writePNG(path, im, params); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote %s (seed %d)\n", path, res.Seeds[i])
		}
	}
	if !bar.tty {
		fmt.Fprintf(stderr, "kiln generate: %d image(s), %s, model loaded in %s, total %s; %s\n", len(res.Seeds), res.Sampler,
			loaded.Round(time.Millisecond), elapsed.Round(time.Millisecond), sel.Reason)
	} else {
		fmt.Fprintf(stderr, "%s\n", sel.Reason)
	}
	return nil
}

// loadImage reads a PNG or JPEG file.
func loadImage(path string) (image.Image, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("init image: %w", err)
	}
	defer fh.Close()
	im, _, err := image.Decode(fh)
	if err != nil {
		return nil, fmt.Errorf("init image %s: %w", path, err)
	}
	return im, nil
}

// numberedPath gives image i of n its file name: the path itself for a
// single image, else stem-<i+1>.ext.
func numberedPath(path string, i, n int) string {
	if n == 1 {
		return path
	}
	ext := filepath.Ext(path)
	if ext == "" {
		ext = ".png"
	}
	return fmt.Sprintf("%s-%d%s", strings.TrimSuffix(path, filepath.Ext(path)), i+1, ext)
}

// generationParameters describes image i in AUTOMATIC1111's format,
// through the same imageio.Generation the server's worker uses.
func generationParameters(f *generateFlags, req pipeline.Request, res *pipeline.Result, i int, modelHash string) imageio.Parameters {
	g := imageio.Generation{Prompt: req.Prompt, NegativePrompt: req.NegativePrompt, Steps: req.Steps, Sampler: res.Sampler,
		CFGScale: req.Guidance, Seed: res.Seeds[i], Width: res.PixelShape[3], Height: res.PixelShape[2],
		ModelHash: modelHash, Model: modelName(f.model), ClipSkip: req.ClipSkip, RNG: req.RNG,
		GuidanceRescale: req.GuidanceRescale, Eta: req.Eta, LiteralPrompt: !req.Emphasis, Version: "kiln " + versionString()}
	if req.InitImage != nil {
		g.DenoisingStrength = req.Strength
	}
	f.hires.generation(&g, req, res)
	ps := g.Parameters()
	f.edit.parameters(&ps, res, i)
	if f.refiner != "" { // AUTOMATIC1111's names for the SDXL hand-off
		ps.Set("Refiner", modelName(f.refiner))
		ps.Set("Refiner switch at", strconv.FormatFloat(f.refinerSwitch, 'g', -1, 64))
	}
	return ps
}

func modelName(path string) string {
	base := filepath.Base(filepath.Clean(path))
	return strings.TrimSuffix(base, filepath.Ext(base))
}

func writePNG(path string, im image.Image, params imageio.Parameters) error {
	fh, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("output: %w", err)
	}
	if err := imageio.WritePNG(fh, im, imageio.Text{Key: imageio.ParametersKey, Value: params.String()}); err != nil {
		fh.Close()
		return fmt.Errorf("output %s: %w", path, err)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("output %s: %w", path, err)
	}
	return nil
}

func saveLatents(path string, res *pipeline.Result) error {
	s := res.LatentShape
	t := safetensors.F32Tensor("latents", []int{s[0], s[1], s[2], s[3]}, res.Latents)
	seeds := make([]string, len(res.Seeds))
	for i, v := range res.Seeds {
		seeds[i] = strconv.FormatUint(v, 10)
	}
	md := map[string]string{"sampler": res.Sampler, "seeds": strings.Join(seeds, ",")}
	if err := safetensors.WriteFile(path, []safetensors.WriteTensor{t}, md); err != nil {
		return fmt.Errorf("save latents: %w", err)
	}
	return nil
}

// progressBar draws steps, it/s and ETA on a terminal; elsewhere it is
// silent.
type progressBar struct {
	w     io.Writer
	tty   bool
	start time.Time
	drawn bool
}

func newProgressBar(w io.Writer) *progressBar {
	b := &progressBar{w: w, start: time.Now()}
	if fh, ok := w.(*os.File); ok {
		if st, err := fh.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			b.tty = true
		}
	}
	return b
}

func (b *progressBar) update(pr pipeline.Progress) {
	if !b.tty {
		return
	}
	fmt.Fprint(b.w, "\r"+progressLine(pr.Step, pr.Steps, time.Since(b.start)))
	b.drawn = true
}

func (b *progressBar) finish() {
	if b.drawn {
		fmt.Fprintln(b.w)
	}
}

// progressLine renders "[=====>     ]  5/20  3.21 it/s  ETA 4s".
func progressLine(step, steps int, elapsed time.Duration) string {
	const width = 30
	filled := 0
	if steps > 0 {
		filled = step * width / steps
	}
	bar := strings.Repeat("=", filled)
	if filled < width {
		bar += ">" + strings.Repeat(" ", width-filled-1)
	}
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(step) / s
	}
	eta := "?"
	if rate > 0 {
		eta = (time.Duration(float64(steps-step) / rate * float64(time.Second))).Round(time.Second).String()
	}
	return fmt.Sprintf("[%s] %d/%d  %.2f it/s  ETA %s", bar, step, steps, rate, eta)
}

// familyDefaults puts a model family's recommended steps and guidance in
// place of the profile's where the command line did not set them, and
// leaves the sampler to a family that runs its own loop.
func familyDefaults(req *pipeline.Request, d family.Defaults, set map[string]bool) {
	if d.Steps > 0 && !set["steps"] {
		req.Steps = d.Steps
	}
	if d.GuidanceScale > 0 && !set["guidance"] {
		req.Guidance = d.GuidanceScale
	}
	if d.Sampler != "" && !set["sampler"] {
		req.Sampler = ""
	}
}
