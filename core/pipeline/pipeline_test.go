package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/model/sd"
	"github.com/kiln-project/kiln/core/rng"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/sample"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// pipelineCase is one entry of reference.json's "pipelines".
type pipelineCase struct {
	Scheduler       string         `json:"scheduler"`
	SchedulerConfig map[string]any `json:"scheduler_config"`
	Prompt          string         `json:"prompt"`
	NegativePrompt  string         `json:"negative_prompt"`
	Height, Width   int
	Steps           int     `json:"steps"`
	Seed            uint64  `json:"seed"`
	Guidance        float64 `json:"guidance_scale"`
	GuidanceRescale float64 `json:"guidance_rescale"`
	NumImages       int     `json:"num_images_per_prompt"`
	Strength        float64 `json:"strength"`
}

// baseScheduler is the SD 1.x schedule the fixture's pipelines were built
// from (make_reference.py: SCHED).
var baseScheduler = map[string]any{"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
	"num_train_timesteps": 1000, "steps_offset": 1, "clip_sample": false, "set_alpha_to_one": false,
	"prediction_type": "epsilon"}

type fixtureEnv struct {
	pipe  *Pipeline
	ref   *safetensors.File
	cases map[string]pipelineCase
}

var (
	envOnce sync.Once
	envVal  *fixtureEnv
	envErr  error
)

// loadEnv loads the fixture model once for all tests of the package.
func loadEnv(t testing.TB) *fixtureEnv {
	t.Helper()
	modelDir := fixtures.Require(t, "sd15-tiny/model")
	refPath := fixtures.Require(t, "sd15-tiny/reference.safetensors")
	jsonPath := fixtures.Require(t, "sd15-tiny/reference.json")
	envOnce.Do(func() {
		p, err := Load(context.Background(), cpu.New(), modelDir)
		if err != nil {
			envErr = err
			return
		}
		f, err := safetensors.Open(refPath)
		if err != nil {
			envErr = err
			return
		}
		data, err := os.ReadFile(jsonPath)
		if err != nil {
			envErr = err
			return
		}
		var ref struct {
			Pipelines map[string]pipelineCase `json:"pipelines"`
		}
		// reference.json holds Python's -Infinity (lambda_min_clipped),
		// which is not JSON; the pipelines section does not need it.
		data = []byte(strings.ReplaceAll(string(data), "-Infinity", "null"))
		if err := json.Unmarshal(data, &ref); err != nil {
			envErr = err
			return
		}
		envVal = &fixtureEnv{pipe: p, ref: f, cases: ref.Pipelines}
	})
	if envErr != nil {
		t.Fatal(envErr)
	}
	return envVal
}

func (e *fixtureEnv) tensor(t testing.TB, name string) []float32 {
	t.Helper()
	v, _, err := safetensors.Float32(e.ref, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (e *fixtureEnv) has(name string) bool {
	_, ok := e.ref.Info(name)
	return ok
}

// schedulerFor builds the scheduler config a case ran with.
func schedulerFor(t *testing.T, c pipelineCase) *sample.Config {
	t.Helper()
	m := map[string]any{"_class_name": c.Scheduler}
	for k, v := range baseScheduler {
		m[k] = v
	}
	for k, v := range c.SchedulerConfig {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	cfg, err := sample.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// requestFor builds the Kiln request equivalent to a diffusers call.
func requestFor(e *fixtureEnv, t *testing.T, name string, c pipelineCase) Request {
	n := max(c.NumImages, 1)
	req := Request{
		Prompt: c.Prompt, NegativePrompt: c.NegativePrompt, Steps: c.Steps, N: n,
		Guidance: c.Guidance, GuidanceRescale: c.GuidanceRescale, Seed: c.Seed, RNG: "cpu",
		Width: 64, Height: 64, Truncate: true,
		// diffusers draws a batch's noise from its one generator; a single
		// image uses Kiln's default per-image generator (seed+0), which is
		// the same stream
		SharedGenerator: n > 1,
	}
	if strings.HasPrefix(name, "img2img") {
		req.Strength = c.Strength
		req.InitPixels = e.tensor(t, "pipe/"+name+"/init_image")
	}
	return req
}

// TestPipelineFixtures runs every pipe/<case> of the fixture and compares
// the final latents, the decoded image and every per-step latent.
func TestPipelineFixtures(t *testing.T) {
	e := loadEnv(t)
	names := make([]string, 0, len(e.cases))
	for n := range e.cases {
		names = append(names, n)
	}
	sort.Strings(names)
	var report []string
	for _, name := range names {
		c := e.cases[name]
		t.Run(name, func(t *testing.T) {
			e.pipe.SetSchedulerConfig(schedulerFor(t, c))
			req := requestFor(e, t, name, c)
			var steps [][]float32
			res, err := e.pipe.Generate(context.Background(), req, func(pr Progress) {
				steps = append(steps, append([]float32(nil), pr.Latents...))
			})
			if err != nil {
				t.Fatal(err)
			}
			worstStep := 0.0
			if !e.has(fmt.Sprintf("pipe/%s/step00", name)) {
				steps = nil // the img2img cases record no per-step latents
			}
			for i, got := range steps {
				key := fmt.Sprintf("pipe/%s/step%02d", name, i)
				if !e.has(key) {
					t.Errorf("%d evaluations ran; the fixture has no %s", len(steps), key)
					break
				}
				if err := fixtures.RelErr(got, e.tensor(t, key)); err > 1e-3 {
					t.Errorf("%s: rel err %g", key, err)
				} else {
					worstStep = math.Max(worstStep, err)
				}
			}
			if k := fmt.Sprintf("pipe/%s/step%02d", name, len(steps)); len(steps) > 0 && e.has(k) {
				t.Errorf("fixture has %s but only %d evaluations ran", k, len(steps))
			}
			latErr := fixtures.RelErr(res.Latents, e.tensor(t, "pipe/"+name+"/latents"))
			if latErr > 1e-3 {
				t.Errorf("latents rel err %g", latErr)
			}
			imgErr := -1.0
			if e.has("pipe/" + name + "/image") {
				imgErr = fixtures.RelErr(res.Pixels, e.tensor(t, "pipe/"+name+"/image"))
				if imgErr > 1e-3 {
					t.Errorf("image rel err %g", imgErr)
				}
			}
			report = append(report, fmt.Sprintf("%-26s latents %.2e image %.2e steps %.2e", name, latErr, imgErr, worstStep))
		})
	}
	t.Logf("relative errors against diffusers:\n%s", strings.Join(report, "\n"))
}

// TestBatchWithExplicitNoise regenerates txt2img_euler_batch from one
// (2,4,16,16) noise tensor drawn from a single generator, passed in.
func TestBatchWithExplicitNoise(t *testing.T) {
	e := loadEnv(t)
	c := e.cases["txt2img_euler_batch"]
	e.pipe.SetSchedulerConfig(schedulerFor(t, c))
	req := requestFor(e, t, "txt2img_euler_batch", c)
	req.SharedGenerator = false
	req.Noise = rng.NewCPU(c.Seed).Randn(2 * 4 * 16 * 16)
	res, err := e.pipe.Generate(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fixtures.RelErr(res.Latents, e.tensor(t, "pipe/txt2img_euler_batch/latents")); err > 1e-3 {
		t.Fatalf("latents rel err %g", err)
	}
}

// TestPerImageSeeds checks that with per-image generators image i of a
// batch equals a single-image job with seed+i.
func TestPerImageSeeds(t *testing.T) {
	e := loadEnv(t)
	c := e.cases["txt2img_euler_a"]
	e.pipe.SetSchedulerConfig(schedulerFor(t, c))
	base := requestFor(e, t, "txt2img_euler_a", c)
	base.SharedGenerator = false
	base.SkipDecode = true
	base.Steps = 4
	batch := base
	batch.N = 3
	res, err := e.pipe.Generate(context.Background(), batch, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Seeds; len(got) != 3 || got[0] != c.Seed || got[2] != c.Seed+2 {
		t.Fatalf("seeds %v", got)
	}
	per := len(res.Latents) / 3
	for i := 0; i < 3; i++ {
		one := base
		one.Seed = c.Seed + uint64(i)
		r1, err := e.pipe.Generate(context.Background(), one, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := fixtures.RelErr(res.Latents[i*per:(i+1)*per], r1.Latents); err > 1e-5 {
			t.Errorf("image %d of the batch differs from its single run: rel err %g", i, err)
		}
	}
	// the single-image run with seed 1234 is the fixture's txt2img_euler_a
	// prefix: image 0 of a 1-image batch from the shared generator is the same
}

// TestCancellation stops a job between steps.
func TestCancellation(t *testing.T) {
	e := loadEnv(t)
	e.pipe.SetSchedulerConfig(schedulerFor(t, e.cases["txt2img_euler"]))
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	_, err := e.pipe.Generate(ctx, Request{Prompt: "x", Steps: 8, Width: 64, Height: 64, Guidance: 7.5}, func(pr Progress) {
		calls++
		if pr.Step == 2 {
			cancel()
		}
	})
	if err == nil || calls != 2 {
		t.Fatalf("err %v after %d progress calls; want cancellation after 2", err, calls)
	}
}

// TestProgressPreview checks the per-step reports.
func TestProgressPreview(t *testing.T) {
	e := loadEnv(t)
	e.pipe.SetSchedulerConfig(schedulerFor(t, e.cases["txt2img_euler"]))
	var got []Progress
	_, err := e.pipe.Generate(context.Background(), Request{Prompt: "x", Steps: 3, N: 2, Width: 64, Height: 32, Guidance: 3, SkipDecode: true},
		func(pr Progress) { got = append(got, pr) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[2].Step != 3 || got[2].Steps != 3 {
		t.Fatalf("progress %+v", got)
	}
	b := got[0].Preview.Bounds()
	if b.Dx() != 2*16 || b.Dy() != 8 {
		t.Fatalf("preview %v, want 32x8 (two 16x8 latents side by side)", b)
	}
}

// TestPreviewMatrix checks the latent-to-RGB mapping on one latent pixel.
func TestPreviewMatrix(t *testing.T) {
	// latent (1, 0, 0, 0) → RGB row 0 of the matrix, mapped from [-1, 1]
	im := preview([]float32{1, 0, 0, 0}, [4]int{1, 4, 1, 1}, sd.LatentRGB)
	want := []uint8{172, 156, 168, 255} // ⌊(row0 + 1) / 2 · 255⌋
	for k := range want {
		if im.Pix[k] != want[k] {
			t.Fatalf("pixel %v, want %v", im.Pix[:4], want)
		}
	}
	// The bias is added: a zero latent shows the bias colour.
	im = preview([]float32{0, 0, 0, 0}, [4]int{1, 4, 1, 1}, family.LatentRGB{Factors: sd.LatentRGB.Factors, Bias: [3]float64{1, -1, 0}})
	if im.Pix[0] != 255 || im.Pix[1] != 0 || im.Pix[2] != 127 {
		t.Fatalf("bias pixel %v", im.Pix[:4])
	}
}

// TestRequestErrors checks that bad requests fail with a clear error.
func TestRequestErrors(t *testing.T) {
	e := loadEnv(t)
	cases := map[string]Request{
		"size not divisible": {Prompt: "x", Width: 66, Height: 64},
		"too many images":    {Prompt: "x", N: 1000},
		"unknown sampler":    {Prompt: "x", Sampler: "euler_x", Width: 64, Height: 64},
		"unknown rng":        {Prompt: "x", RNG: "tpu", Width: 64, Height: 64},
		"strength no image":  {Prompt: "x", Strength: 0.5, Width: 64, Height: 64},
		"bad strength":       {Prompt: "x", Strength: 1.5, InitPixels: make([]float32, 3*64*64), Width: 64, Height: 64},
		"short init pixels":  {Prompt: "x", Strength: 0.5, InitPixels: make([]float32, 10), Width: 64, Height: 64},
		"wrong noise size":   {Prompt: "x", Noise: make([]float32, 7), Width: 64, Height: 64},
		"nan guidance":       {Prompt: "x", Guidance: math.NaN(), Width: 64, Height: 64},
		"rescale above one":  {Prompt: "x", GuidanceRescale: 2, Width: 64, Height: 64},
		"strength too small": {Prompt: "x", Strength: 0.01, Steps: 10, InitPixels: make([]float32, 3*64*64), Width: 64, Height: 64},
	}
	for name, req := range cases {
		if _, err := e.pipe.Generate(context.Background(), req, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestPixelsToImages(t *testing.T) {
	// two 3×2 images; channel planes hold distinct values, including out of
	// range and NaN ones that must clamp
	shape := [4]int{2, 3, 2, 3}
	px := make([]float32, 2*3*2*3)
	for i := range px {
		px[i] = float32(i%7)/6 - 0.1
	}
	px[5] = float32(math.NaN())
	ims := PixelsToImages(px, shape)
	if len(ims) != 2 {
		t.Fatalf("%d images", len(ims))
	}
	want8 := func(v float32) uint8 {
		f := math.Round(float64(v) * 255)
		if math.IsNaN(f) || f < 0 {
			return 0
		}
		return uint8(min(f, 255))
	}
	for i, im := range ims {
		for y := 0; y < 2; y++ {
			for x := 0; x < 3; x++ {
				for c := 0; c < 3; c++ {
					v := px[i*18+c*6+y*3+x]
					if got := im.Pix[im.PixOffset(x, y)+c]; got != want8(v) {
						t.Fatalf("image %d (%d,%d) channel %d: %d, want %d (from %v)", i, x, y, c, got, want8(v), v)
					}
				}
				if im.Pix[im.PixOffset(x, y)+3] != 255 {
					t.Fatal("alpha not opaque")
				}
			}
		}
	}
}
