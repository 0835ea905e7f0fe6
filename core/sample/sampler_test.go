package sample

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

const sd15Config = `{
  "_class_name": "PNDMScheduler",
  "_diffusers_version": "0.6.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null,
  "clip_sample": false
}`

// pointMassDenoiser is the exact model for data that is always the latent
// c: given a sample x at noise level (α, σ_t) it predicts ε or v exactly.
func pointMassDenoiser(c []float32, prediction string, alpha, sigmaT float64, x []float32) []float32 {
	out := make([]float32, len(x))
	for j := range x {
		eps := (float64(x[j]) - alpha*float64(c[j])) / sigmaT
		if prediction == "v_prediction" {
			out[j] = float32(alpha*eps - sigmaT*float64(c[j]))
		} else {
			out[j] = float32(eps)
		}
	}
	return out
}

// levelOf returns the (α, σ_t) of the sample a sampler hands the model at
// evaluation i, from its timestep (ᾱ at the nearest training timestep).
func levelOf(t *testing.T, cfg *Config, s Sampler, i int) (float64, float64) {
	t.Helper()
	p, err := cfg.resolve(classEuler)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := newTraining(p, false)
	if err != nil {
		t.Fatal(err)
	}
	ts := s.Timesteps()[i]
	// fractional timesteps (Karras): interpolate ᾱ through σ
	sig := interp(ts, tr.sigmas)
	a := 1 / math.Sqrt(sig*sig+1)
	return a, sig * a
}

// TestSamplersRecoverPointMass runs every sampler with the exact denoiser
// of a point-mass data distribution: the final latent must be the point
// (up to the residual noise of schedules that stop short of σ = 0).
func TestSamplersRecoverPointMass(t *testing.T) {
	type run struct {
		name string
		eta  float64
	}
	var runs []run
	for _, n := range Names() {
		runs = append(runs, run{n, 0})
	}
	runs = append(runs, run{"ddim", 0.7})
	for _, pred := range []string{"epsilon", "v_prediction"} {
		for _, r := range runs {
			name := r.name
			cfg, err := ParseConfig([]byte(sd15Config))
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.Set("prediction_type", pred); err != nil {
				t.Fatal(err)
			}
			steps := 20
			if name == "lcm" {
				steps = 4
			}
			s, err := New(cfg, name, steps, Options{Eta: r.eta})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			draws := 0
			rng := rand.New(rand.NewPCG(1, 2))
			const n = 64
			c := make([]float32, n)
			for j := range c {
				c[j] = float32(rng.NormFloat64() * 0.8)
			}
			noise := func() []float32 {
				draws++
				z := make([]float32, n)
				for j := range z {
					z[j] = float32(rng.NormFloat64())
				}
				return z
			}
			x := noise()
			init := float32(s.InitNoiseSigma())
			for j := range x {
				x[j] *= init
			}
			for i := range s.Timesteps() {
				in := s.ScaleModelInput(x, i)
				a, st := levelOf(t, cfg, s, i)
				out := pointMassDenoiser(c, pred, a, st, in)
				next, x0, err := s.Step(i, out, x, noise)
				if err != nil {
					t.Fatalf("%s step %d: %v", name, i, err)
				}
				if len(x0) != n {
					t.Fatalf("%s: x0 has %d values", name, len(x0))
				}
				x = next
			}
			var worst float64
			for j := range x {
				worst = math.Max(worst, math.Abs(float64(x[j]-c[j])))
			}
			tol := 0.02
			if name == "ddim" || name == "pndm" || name == "ddpm" {
				tol = 0.1 // these stop at ᾱ_0 < 1 (set_alpha_to_one false) or add final noise
			}
			if worst > tol || math.IsNaN(worst) {
				t.Errorf("%s eta %g (%s): final latent off the data point by %g", name, r.eta, pred, worst)
			}
			// noise draws: the initial one plus one per stochastic step
			want := 1
			switch {
			case name == "euler_a" || strings.HasPrefix(name, "dpmpp_2m_sde"):
				want += steps
			case name == "ddpm": // every step but t = 0 (leading spacing ends at t = 1)
				want += steps
			case name == "lcm": // every step but the last
				want += steps - 1
			case name == "ddim" && r.eta > 0:
				want += steps
			}
			if draws != want {
				t.Errorf("%s eta %g: %d noise draws, want %d", name, r.eta, draws, want)
			}
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	bad := map[string]string{
		"unknown key":   `{"_class_name": "EulerDiscreteScheduler", "frobnicate": 1}`,
		"wrong type":    `{"_class_name": "EulerDiscreteScheduler", "steps_offset": "one"}`,
		"fractional":    `{"steps_offset": 1.5}`,
		"not json":      `{"steps_offset": `,
		"solver_p":      `{"solver_p": {"x": 1}}`,
		"list of words": `{"trained_betas": ["a"]}`,
	}
	for name, js := range bad {
		if _, err := ParseConfig([]byte(js)); err == nil {
			t.Errorf("%s: ParseConfig accepted %s", name, js)
		}
	}
	cfg, err := ParseConfig([]byte(`{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity, "sigma_min": null}`))
	if err != nil {
		t.Fatalf("Python JSON with -Infinity: %v", err)
	}
	if v := cfg.values["lambda_min_clipped"]; v != math.Inf(-1) {
		t.Errorf("lambda_min_clipped = %v", v)
	}
}

func TestNewErrors(t *testing.T) {
	cfg, err := ParseConfig([]byte(sd15Config))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, sampler string
		steps         int
		opts          Options
		set           map[string]any
		want          string
	}{
		{"unknown sampler", "euler_b", 10, Options{}, nil, "unknown sampler"},
		{"zero steps", "euler", 0, Options{}, nil, "steps must be in"},
		{"eta on euler", "euler", 10, Options{Eta: 0.5}, nil, "eta"},
		{"beta sigmas", "euler", 10, Options{}, map[string]any{"use_beta_sigmas": true}, "use_beta_sigmas"},
		{"thresholding", "ddim", 10, Options{}, map[string]any{"thresholding": true}, "thresholding"},
		{"bad spacing", "euler", 10, Options{}, map[string]any{"timestep_spacing": "middle"}, "timestep_spacing"},
		{"bad prediction", "euler", 10, Options{}, map[string]any{"prediction_type": "flow_prediction"}, "prediction_type"},
		{"old dpm", "", 10, Options{}, map[string]any{"algorithm_type": "dpmsolver"}, "algorithm_type"},
		{"lcm too many steps", "lcm", 60, Options{}, nil, "original_inference_steps"},
		{"learned variance", "ddpm", 10, Options{}, map[string]any{"variance_type": "learned_range"}, "variance_type"},
		{"prk with few steps", "", 3, Options{}, map[string]any{"skip_prk_steps": false}, "at least 4"},
	}
	for _, c := range cases {
		cc := cfg.Clone()
		if c.name == "old dpm" {
			cc.ClassName = "DPMSolverMultistepScheduler"
		}
		for k, v := range c.set {
			if err := cc.Set(k, v); err != nil {
				t.Fatal(err)
			}
		}
		_, err := New(cc, c.sampler, c.steps, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", c.name, err, c.want)
		}
	}
	unknownClass := &Config{ClassName: "LMSDiscreteScheduler"}
	if _, err := New(unknownClass, "", 10, Options{}); err == nil {
		t.Error("unknown class with no sampler name accepted")
	}
	if _, err := New(unknownClass, "euler", 10, Options{}); err != nil {
		t.Errorf("unknown class with an explicit sampler: %v", err)
	}
}

func TestDefaultSampler(t *testing.T) {
	cases := map[string]string{
		`{"_class_name": "EulerDiscreteScheduler"}`:                                           "euler",
		`{"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": true}`:                "euler_karras",
		`{"_class_name": "PNDMScheduler"}`:                                                    "pndm",
		`{"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": true}`:           "dpmpp_2m_karras",
		`{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}`: "dpmpp_2m_sde",
		`{"_class_name": "EulerAncestralDiscreteScheduler"}`:                                  "euler_a",
	}
	for js, want := range cases {
		cfg, err := ParseConfig([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		got, err := cfg.DefaultSampler()
		if err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", js, got, err, want)
		}
	}
	if Label("euler_a") != "Euler a" || Label("dpmpp_2m_karras") != "DPM++ 2M Karras" {
		t.Error("labels")
	}
}

// TestUseDefaultValuesDropsKeys checks that keys recorded as the writing
// class's defaults do not override the target class's defaults.
func TestUseDefaultValuesDropsKeys(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "linspace", "_use_default_values": ["timestep_spacing"]}`))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := cfg.Resolved("DDIMScheduler")
	if m["timestep_spacing"] != "leading" {
		t.Errorf("DDIM timestep_spacing = %v, want its default leading", m["timestep_spacing"])
	}
}

// TestSolveVandermonde checks the small linear solver UniPC uses.
func TestSolveVandermonde(t *testing.T) {
	r := []float64{-0.7, 0.4, 1}
	want := []float64{0.3, -1.2, 2.5}
	b := make([]float64, 3)
	for k := 0; k < 3; k++ {
		for j := 0; j < 3; j++ {
			b[k] += math.Pow(r[j], float64(k)) * want[j]
		}
	}
	got := solveVandermonde(r, b)
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-12 {
			t.Fatalf("got %v want %v", got, want)
		}
	}
}
