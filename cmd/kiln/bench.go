package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-project/kiln/bench"
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/cuda"
	"github.com/kiln-project/kiln/gateway/validate"
	kilnmodels "github.com/kiln-project/kiln/models"
)

// runBench implements `kiln bench`: load time, text encoder, UNet step, VAE
// decode, end-to-end latency and throughput per model and batch size.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := bench.DefaultOptions()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	models := fs.String("models", "synthetic:sd15", "comma-separated model folders or files, "+kilnmodels.BuiltinName+" (the built-in model), or synthetic:sd15, synthetic:sd15@768, synthetic:sd21, synthetic:sdxl, synthetic:sdxl-refiner (each optionally @SIZE), synthetic:qwen-image (small width, end to end only: --components=false)")
	batches := fs.String("batch-sizes", "1,4,8", "comma-separated images per job")
	fs.IntVar(&o.Steps, "steps", o.Steps, "sampler steps")
	fs.IntVar(&o.Iterations, "iterations", o.Iterations, "timed repetitions of each measurement")
	fs.IntVar(&o.Warmup, "warmup", o.Warmup, "untimed repetitions first")
	fs.Float64Var(&o.Guidance, "guidance", o.Guidance, "classifier-free guidance scale")
	fs.StringVar(&o.Sampler, "sampler", o.Sampler, "sampler")
	fs.IntVar(&o.Size, "size", 0, "image side in pixels (default: the model's)")
	fs.BoolVar(&o.Profile, "profile", false, "add a per-kernel breakdown of one UNet step (GPU)")
	fs.BoolVar(&o.Components, "components", true, "time text encoder, UNet step and VAE decode on their own too")
	device := fs.String("device", "auto", "compute device: auto, cpu or cuda:N")
	output := fs.String("output", "", "write the results as JSON to this file")
	check := fs.Bool("check", false, "only report the GPU setup (as kiln doctor) and exit")
	serveMode := fs.Bool("serve", false, "benchmark the server: an in-process one (or --url) driven over HTTP at each --concurrency")
	url := fs.String("url", "", "with --serve: a running server's base URL instead of an in-process one")
	key := fs.String("key", "", "with --url: the tenant API key")
	conc := fs.String("concurrency", "1,8,32", "with --serve: comma-separated numbers of concurrent clients")
	duration := fs.Duration("duration", 30*time.Second, "with --serve: how long each concurrency level submits jobs")
	tuningDir := fs.String("tuning-dir", defaultTuningDir(), "folder of stored GPU kernel choices, loaded first and saved after the run (empty: none)")
	trace := fs.Bool("trace", false, "with --serve: report each served stage's count and mean per level")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if *check {
		rep := cuda.Probe()
		rep.Print(stdout)
		return nil
	}
	o.Models = nil
	for _, m := range strings.Split(*models, ",") {
		m = strings.TrimSpace(m)
		if m == kilnmodels.BuiltinName {
			// The built-in model by name, as kiln generate uses it.
			p, err := kilnmodels.BuiltinPath()
			if err != nil {
				return err
			}
			m = p
		}
		if m != "" {
			o.Models = append(o.Models, m)
		}
	}
	o.Batches = nil
	for _, b := range strings.Split(*batches, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(b))
		if err != nil || n < 1 {
			return usageError{fmt.Errorf("--batch-sizes: %q is not a positive number", b)}
		}
		o.Batches = append(o.Batches, n)
	}
	if len(o.Models) == 0 {
		return usageError{errors.New("--models: name at least one model")}
	}
	if o.Steps < 1 || o.Iterations < 1 || o.Warmup < 0 {
		return usageError{errors.New("--steps and --iterations must be ≥ 1, --warmup ≥ 0")}
	}
	// The same ranges as the API and kiln generate.
	switch {
	case o.Steps > pipeline.MaxSteps:
		return usageError{fmt.Errorf("--steps %d: want 1..%d", o.Steps, pipeline.MaxSteps)}
	case math.IsNaN(o.Guidance) || o.Guidance < 0 || o.Guidance > validate.MaxGuidance:
		return usageError{fmt.Errorf("--guidance %v: want 0..%g", o.Guidance, validate.MaxGuidance)}
	case o.Size != 0 && (o.Size < validate.MinSide || o.Size > validate.MaxSide || o.Size%8 != 0):
		return usageError{fmt.Errorf("--size %d: want a multiple of 8 from %d to %d (0: the model's)", o.Size, validate.MinSide, validate.MaxSide)}
	case o.Iterations > 1000 || o.Warmup > 1000:
		return usageError{fmt.Errorf("--iterations %d --warmup %d: want at most 1000 each", o.Iterations, o.Warmup)}
	}
	for _, b := range o.Batches {
		if b > pipeline.MaxImages {
			return usageError{fmt.Errorf("--batch-sizes: %d is more than %d images", b, pipeline.MaxImages)}
		}
	}
	if _, _, err := cuda.ParseDevice(*device); err != nil {
		return usageError{err}
	}
	if *serveMode {
		cs, err := parseInts("concurrency", *conc)
		if err != nil {
			return err
		}
		if *duration <= 0 {
			return usageError{errors.New("--duration must be positive")}
		}
		size := o.Size
		if size == 0 && *url == "" {
			size = syntheticSide(o.Models[0])
		}
		return runServeBench(ctx, serveBench{url: *url, key: *key, model: o.Models[0], device: *device, size: size,
			steps: o.Steps, guidance: o.Guidance, sampler: o.Sampler, concurrency: cs, duration: *duration,
			engine: o.Batches, trace: *trace, output: *output, tuningDir: *tuningDir, o: o}, stdout, stderr)
	}
	sel, err := cuda.Select(*device)
	if err != nil {
		return err
	}
	defer sel.Close()
	fmt.Fprintln(stderr, sel.Reason)
	if sel.Device != nil && *tuningDir != "" {
		if n, err := sel.Device.LoadTuning(*tuningDir); err != nil {
			fmt.Fprintf(stderr, "stored kernel tuning not used: %v\n", err)
		} else if n > 0 {
			fmt.Fprintf(stderr, "loaded %d stored kernel choices from %s\n", n, *tuningDir)
		}
		defer func() {
			if err := sel.Device.SaveTuning(*tuningDir); err != nil {
				fmt.Fprintf(stderr, "saving kernel tuning: %v\n", err)
			}
		}()
	}
	if sel.Device == nil { // the CPU: say beforehand when it takes long
		if est, flops, ok := estimateBench(sel.Backend, o); ok && est > longBench {
			warnLongBench(stderr, est, flops)
		}
	}
	var prog *bench.Progress
	if isTerminal(stderr) {
		prog = bench.NewProgress(stderr)
	}
	rep, err := bench.Run(ctx, sel, o, prog)
	if rep != nil && len(rep.Results) > 0 {
		rep.WriteTable(stdout)
		if *output != "" {
			f, ferr := os.Create(*output)
			if ferr != nil {
				return errors.Join(err, ferr)
			}
			ferr = rep.WriteJSON(f)
			if cerr := f.Close(); ferr == nil {
				ferr = cerr
			}
			if ferr != nil {
				return errors.Join(err, fmt.Errorf("writing %s: %w", *output, ferr))
			}
		}
	}
	return err
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// syntheticSide is the default image side of a synthetic:NAME model (0 for
// other models: the server's default for the model).
func syntheticSide(model string) int {
	name, ok := strings.CutPrefix(model, bench.SyntheticPrefix)
	if !ok {
		return 0
	}
	arch, size, _ := strings.Cut(name, "@")
	if n, err := strconv.Atoi(size); err == nil {
		return n
	}
	if arch == "sd21" {
		return 768
	}
	return 512
}

// defaultTuningDir is where `kiln bench` keeps GPU kernel choices: the
// user cache folder ("" when there is none).
func defaultTuningDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "kiln", "tuning")
}
