package sdxl

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/checkpoint"
	"github.com/kiln-project/kiln/core/conditioning"
	"github.com/kiln-project/kiln/core/rng"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/sample"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// open loads a tiny fixture model (a diffusers folder, or with single the
// SGM file with the folder's configs) on the CPU.
func open(t *testing.T, name string, single bool) (*Model, *checkpoint.Model) {
	t.Helper()
	path := filepath.Join("testdata", name)
	ck, err := checkpoint.Load(path, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	if single {
		opts := checkpoint.Options{UNetConfig: ck.UNetConfig, VAEConfig: ck.VAEConfig, TextEncoderConfig: ck.TextEncoderConfig,
			TextEncoder2Config: ck.TextEncoder2Config, TokenizerDir: filepath.Join("testdata", "base", "tokenizer")}
		if ck, err = checkpoint.Load(path+".safetensors", opts); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ck.Close() })
	}
	be := cpu.New()
	m, err := New(be, be, ck)
	if err != nil {
		t.Fatal(err)
	}
	return m, ck
}

func reference(t *testing.T) (*safetensors.File, map[string]json.RawMessage) {
	t.Helper()
	f, err := safetensors.Open(filepath.Join("testdata", "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	js, err := os.ReadFile(filepath.Join("testdata", "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]json.RawMessage
	if err := json.Unmarshal(js, &meta); err != nil {
		t.Fatal(err)
	}
	return f, meta
}

func want(t *testing.T, ref safetensors.Source, key string) []float32 {
	t.Helper()
	v, _, err := safetensors.Float32(ref, key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func near(t *testing.T, key string, got, wantv []float32, tol float64) {
	t.Helper()
	if len(got) != len(wantv) {
		t.Fatalf("%s: %d values, want %d", key, len(got), len(wantv))
	}
	if e := fixtures.RelErr(got, wantv); e > tol {
		t.Errorf("%s: relative error %.3g > %g", key, e, tol)
	} else {
		t.Logf("%s: relative error %.3g", key, e)
	}
}

// diffusers' encode_prompt, as the pipelines call it (truncated prompts).
var literal = conditioning.Options{}

// TestEncodePair matches both pipelines' encode_prompt: the base with a
// negative prompt, the refiner encoding "" for its absent negative prompt.
func TestEncodePair(t *testing.T) {
	ref, meta := reference(t)
	var prompts []string
	if err := json.Unmarshal(meta["prompts"], &prompts); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		model, neg string
	}{{"base", "blurry, low quality"}, {"refiner", ""}} {
		for _, single := range []bool{false, true} {
			m, _ := open(t, tc.model, single)
			pos, neg, err := m.EncodePair(context.Background(), prompts[0], "", tc.neg, "", literal)
			if err != nil {
				t.Fatal(err)
			}
			k := "enc/" + tc.model + "/"
			near(t, k+"prompt_embeds", pos.Hidden, want(t, ref, k+"prompt_embeds"), 1e-4)
			near(t, k+"negative_prompt_embeds", neg.Hidden, want(t, ref, k+"negative_prompt_embeds"), 1e-4)
			near(t, k+"pooled", pos.Pooled, want(t, ref, k+"pooled"), 1e-4)
			near(t, k+"negative_pooled", neg.Pooled, want(t, ref, k+"negative_pooled"), 1e-4)
		}
	}
	// The base zeroes an absent negative prompt.
	m, _ := open(t, "base", false)
	_, neg, err := m.EncodePair(context.Background(), prompts[0], "", "", "", literal)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range append(neg.Hidden, neg.Pooled...) {
		if v != 0 {
			t.Fatal("absent negative prompt not zero on the base")
		}
	}
}

// pipeCase is a case of reference.json's pipelines.
type pipeCase struct {
	Model           string         `json:"model"`
	Scheduler       string         `json:"scheduler"`
	SchedulerConfig map[string]any `json:"scheduler_config"`
	Prompt          string         `json:"prompt"`
	Prompt2         string         `json:"prompt_2"`
	Negative        string         `json:"negative_prompt"`
	Negative2       string         `json:"negative_prompt_2"`
	Height, Width   int
	Steps           int     `json:"steps"`
	Guidance        float64 `json:"guidance_scale"`
	Seed            uint64  `json:"seed"`
	N               int     `json:"num_images_per_prompt"`
	Strength        float64 `json:"strength"`
	OriginalSize    []int   `json:"original_size"`
	Crop            []int   `json:"crops_coords_top_left"`
	TargetSize      []int   `json:"target_size"`
	NegOriginalSize []int   `json:"negative_original_size"`
	NegCrop         []int   `json:"negative_crops_coords_top_left"`
	NegTargetSize   []int   `json:"negative_target_size"`
	Aesthetic       float64 `json:"aesthetic_score"`
	NegAesthetic    float64 `json:"negative_aesthetic_score"`
	DenoisingEnd    float64 `json:"denoising_end"`
	DenoisingStart  float64 `json:"denoising_start"`
	BaseSeed        uint64  `json:"base_seed"`
	RefinerSeed     uint64  `json:"refiner_seed"`
}

func pair(v []int) [2]int {
	if len(v) != 2 {
		return [2]int{}
	}
	return [2]int{v[0], v[1]}
}

// samplerName maps a case's scheduler to Kiln's sampler name.
func samplerName(c pipeCase) string {
	switch c.Scheduler {
	case "EulerAncestralDiscreteScheduler":
		return "euler_a"
	case "DPMSolverMultistepScheduler":
		return "dpmpp_2m_karras"
	}
	return "euler"
}

// run is what a pipeline does with the family for one request, written out
// for the parity test: conditioning, noise, the guided sampler loop between
// evaluations begin and end (end 0: all), img2img's noised start or given
// latents.
type run struct {
	m          *Model
	c          pipeCase
	gen        rng.Generator
	init       []float32 // img2img: clean latents (scaled); with latents: the start itself
	startAsIs  bool
	begin, end int
	img2img    bool
}

func (r run) generate(t *testing.T, cfg *sample.Config) []float32 {
	t.Helper()
	ctx := context.Background()
	c := r.c
	n := max(c.N, 1)
	s, err := sample.New(cfg, samplerName(c), c.Steps, sample.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h, w := c.Height/r.m.VAE.Factor(), c.Width/r.m.VAE.Factor()
	per := 4 * h * w
	pos, neg, err := r.m.EncodePair(ctx, c.Prompt, c.Prompt2, c.Negative, c.Negative2, literal)
	if err != nil {
		t.Fatal(err)
	}
	mc := Micro{OriginalSize: pair(c.OriginalSize), CropTopLeft: pair(c.Crop), TargetSize: pair(c.TargetSize),
		NegativeOriginalSize: pair(c.NegOriginalSize), NegativeCropTopLeft: pair(c.NegCrop), NegativeTargetSize: pair(c.NegTargetSize),
		AestheticScore: c.Aesthetic, NegativeAestheticScore: c.NegAesthetic}
	pid, nid := r.m.TimeIDs(mc, c.Height, c.Width, r.img2img)
	cfgOn := c.Guidance > 1
	rows := &Rows{}
	if cfgOn {
		if err := rows.Append(neg, nid, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := rows.Append(pos, pid, n); err != nil {
		t.Fatal(err)
	}
	ts := s.Timesteps()
	var x []float32
	switch {
	case r.startAsIs:
		x = r.init
	case r.init != nil:
		x = s.AddNoise(r.init, r.gen.Randn(n*per), r.begin)
	default:
		x = r.gen.Randn(n * per)
		for i := range x {
			x[i] *= float32(s.InitNoiseSigma())
		}
	}
	end := len(ts)
	if r.end > 0 {
		end = r.end
	}
	for i := r.begin; i < end; i++ {
		in := s.ScaleModelInput(x, i)
		batch := in
		if cfgOn {
			batch = append(append([]float32(nil), in...), in...)
		}
		tv := make([]float32, len(batch)/per)
		for k := range tv {
			tv[k] = float32(ts[i])
		}
		out, err := r.m.Predict(ctx, batch, [4]int{len(tv), 4, h, w}, tv, rows)
		if err != nil {
			t.Fatal(err)
		}
		if cfgOn {
			u, tx := out[:n*per], out[n*per:]
			g := make([]float32, n*per)
			for k := range g {
				g[k] = u[k] + float32(c.Guidance)*(tx[k]-u[k])
			}
			out = g
		}
		if x, _, err = s.Step(i, out, x, func() []float32 { return r.gen.Randn(n * per) }); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

// cutoff counts the timesteps at or above diffusers' discrete cutoff for a
// denoising fraction.
func cutoff(ts []float64, frac float64) int {
	c := math.Round(1000 - frac*1000)
	k := 0
	for _, t := range ts {
		if t >= c {
			k++
		}
	}
	return k
}

// TestPipelineParity reproduces every StableDiffusionXL pipeline case of the
// fixtures through the family (txt2img with three samplers, negative prompt,
// prompt_2, micro-conditioning, no guidance, two images; img2img on the
// base and the refiner; base→refiner hand-off).
func TestPipelineParity(t *testing.T) {
	ref, meta := reference(t)
	var cases map[string]pipeCase
	if err := json.Unmarshal(meta["pipelines"], &cases); err != nil {
		t.Fatal(err)
	}
	base, _ := open(t, "base", false)
	refiner, _ := open(t, "refiner", true) // the refiner through its single file
	init := want(t, ref, "pipe/init_image")
	encodeInit := func(m *Model, gen rng.Generator) []float32 {
		px := make([]float32, len(init))
		for i, v := range init {
			px[i] = 2*v - 1
		}
		mean, logvar, ls, err := m.VAE.Encode(context.Background(), px, [4]int{1, 3, 64, 64})
		if err != nil {
			t.Fatal(err)
		}
		eps := gen.Randn(len(mean))
		x := make([]float32, len(mean))
		for k := range x {
			lv := min(max(float64(logvar[k]), -30), 20)
			x[k] = mean[k] + float32(math.Exp(0.5*lv))*eps[k]
		}
		cfg := m.VAE.Config()
		if err := cfg.Normalize(x, ls); err != nil {
			t.Fatal(err)
		}
		return x
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			js, _ := json.Marshal(c.SchedulerConfig)
			cfg, err := sample.ParseConfig(js)
			if err != nil {
				t.Fatal(err)
			}
			if c.Height == 0 {
				c.Height, c.Width = 64, 64
			}
			switch c.Model {
			case "base":
				r := run{m: base, c: c, gen: rng.NewCPU(c.Seed)}
				if c.Strength > 0 {
					r.img2img = true
					r.init = encodeInit(base, r.gen)
					r.begin = c.Steps - min(int(float64(c.Steps)*c.Strength), c.Steps)
				}
				near(t, name, r.generate(t, cfg), want(t, ref, "pipe/"+name+"/latents"), 1e-3)
			case "refiner":
				r := run{m: refiner, c: c, gen: rng.NewCPU(c.Seed), img2img: true}
				r.init = encodeInit(refiner, r.gen)
				r.begin = c.Steps - min(int(float64(c.Steps)*c.Strength), c.Steps)
				near(t, name, r.generate(t, cfg), want(t, ref, "pipe/"+name+"/latents"), 1e-3)
			case "base+refiner":
				s, err := sample.New(cfg, samplerName(c), c.Steps, sample.Options{})
				if err != nil {
					t.Fatal(err)
				}
				k := cutoff(s.Timesteps(), c.DenoisingEnd)
				rb := run{m: base, c: c, gen: rng.NewCPU(c.BaseSeed), end: k}
				lat := rb.generate(t, cfg)
				near(t, name+"/base", lat, want(t, ref, "pipe/"+name+"/base/latents"), 1e-3)
				rc := c
				rr := run{m: refiner, c: rc, gen: rng.NewCPU(c.RefinerSeed), init: lat, startAsIs: true, img2img: true,
					begin: cutoff(s.Timesteps(), c.DenoisingStart)}
				near(t, name, rr.generate(t, cfg), want(t, ref, "pipe/"+name+"/latents"), 1e-3)
			default:
				t.Fatalf("unknown model %q", c.Model)
			}
		})
	}
}
