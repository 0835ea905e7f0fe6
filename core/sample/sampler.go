// Package sample holds the noise schedulers and samplers of the diffusion
// loop, each reproducing its diffusers counterpart (Euler, Euler ancestral,
// Heun, DDIM, DDPM, DPM-Solver++ (2M, Karras), UniPC, LCM and PNDM), with
// their timestep spacings, Karras sigmas, epsilon and v-prediction. They run
// on the host over the latent (float32 storage, float64 arithmetic) and are
// configured from a diffusers scheduler_config.json, optionally overridden
// by a sampler name.
package sample

import (
	"fmt"
	"sort"
	"strings"
)

// Noise draws standard normal noise with as many elements as the batch
// latent; stochastic samplers call it once per step that adds noise.
type Noise func() []float32

// Sampler runs one denoising schedule. It is stateful (multistep samplers
// keep earlier model outputs) and serves one generation; build a new one per
// run with New.
type Sampler interface {
	// Name is the sampler's name (see Names).
	Name() string
	// Timesteps returns the model timestep of every model evaluation, in
	// order; index i of ScaleModelInput and Step refers to this list.
	Timesteps() []float64
	// Sigmas returns the noise-level table of sigma-based samplers (one
	// more than the evaluations for single-step samplers), or nil.
	Sigmas() []float64
	// InitNoiseSigma is the standard deviation of the initial noise that
	// txt2img multiplies the unit noise by.
	InitNoiseSigma() float64
	// Order is the number of model evaluations per step (2 for Heun);
	// img2img skips Order() evaluations per skipped step.
	Order() int
	// ScaleModelInput returns the model input for evaluation i (the
	// sample scaled by 1/sqrt(σ²+1) for sigma samplers, else x itself).
	ScaleModelInput(x []float32, i int) []float32
	// Step takes the model output of evaluation i for sample x and
	// returns the next sample and the current estimate of the clean
	// latent (x0), which previews use. noise is called when the step
	// adds noise; it may be nil for deterministic samplers.
	Step(i int, modelOutput, x []float32, noise Noise) (next, x0 []float32, err error)
	// AddNoise noises a clean latent to the level of evaluation i, for
	// img2img: the result is what Step(i) expects as its sample.
	AddNoise(x0, noise []float32, i int) []float32
}

// MaxSteps is the largest number of inference steps New accepts.
const MaxSteps = 10000

// Options are per-request sampler settings that diffusers passes to step().
type Options struct {
	// Eta is DDIM's stochasticity (0 = deterministic DDIM, 1 = DDPM-like).
	Eta float64
}

// samplerSpec is one named sampler: a class and the configuration keys its
// name forces.
type samplerSpec struct {
	class  class
	forced map[string]any
	label  string // A1111-style display name
}

// samplers maps sampler names to their specifications.
var samplers = map[string]samplerSpec{
	"euler":               {classEuler, map[string]any{"use_karras_sigmas": false}, "Euler"},
	"euler_karras":        {classEuler, map[string]any{"use_karras_sigmas": true}, "Euler Karras"},
	"euler_a":             {classEulerAncestral, nil, "Euler a"},
	"heun":                {classHeun, map[string]any{"use_karras_sigmas": false}, "Heun"},
	"heun_karras":         {classHeun, map[string]any{"use_karras_sigmas": true}, "Heun Karras"},
	"ddim":                {classDDIM, nil, "DDIM"},
	"ddpm":                {classDDPM, nil, "DDPM"},
	"dpmpp_2m":            {classDPMSolver, map[string]any{"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": false}, "DPM++ 2M"},
	"dpmpp_2m_karras":     {classDPMSolver, map[string]any{"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": true}, "DPM++ 2M Karras"},
	"dpmpp_2m_sde":        {classDPMSolver, map[string]any{"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": false}, "DPM++ 2M SDE"},
	"dpmpp_2m_sde_karras": {classDPMSolver, map[string]any{"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": true}, "DPM++ 2M SDE Karras"},
	"unipc":               {classUniPC, nil, "UniPC"},
	"lcm":                 {classLCM, nil, "LCM"},
	"pndm":                {classPNDM, map[string]any{"skip_prk_steps": true}, "PLMS"},
}

// classSampler names the sampler that a configuration's class selects by
// default (its own settings unchanged).
var classSampler = map[class]string{
	classEuler: "euler", classEulerAncestral: "euler_a", classHeun: "heun", classDDIM: "ddim",
	classDDPM: "ddpm", classDPMSolver: "dpmpp_2m", classUniPC: "unipc", classLCM: "lcm", classPNDM: "pndm",
}

// Names lists the sampler names New accepts, sorted.
func Names() []string {
	out := make([]string, 0, len(samplers))
	for n := range samplers {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Label returns the display name of a sampler as AUTOMATIC1111 writes it in
// PNG parameters ("Euler a", "DPM++ 2M Karras"), or name itself if unknown.
func Label(name string) string {
	if s, ok := samplers[name]; ok {
		return s.label
	}
	return name
}

// DefaultSampler returns the sampler name the configuration's class selects
// (for example "euler" for EulerDiscreteScheduler), or an error when the
// class is not one Kiln implements.
func (c *Config) DefaultSampler() (string, error) {
	k, ok := classNames[c.ClassName]
	if !ok {
		if c.ClassName == "" {
			return "", fmt.Errorf("scheduler config names no _class_name; choose a sampler (%s)", strings.Join(Names(), ", "))
		}
		return "", fmt.Errorf("scheduler class %q is not supported; choose a sampler (%s)", c.ClassName, strings.Join(Names(), ", "))
	}
	name := classSampler[k]
	if k == classEuler && c.values["use_karras_sigmas"] == true {
		name = "euler_karras"
	}
	if k == classHeun && c.values["use_karras_sigmas"] == true {
		name = "heun_karras"
	}
	if k == classDPMSolver {
		alg, _ := c.values["algorithm_type"].(string)
		sde := alg == "sde-dpmsolver++"
		karras := c.values["use_karras_sigmas"] == true
		switch {
		case sde && karras:
			name = "dpmpp_2m_sde_karras"
		case sde:
			name = "dpmpp_2m_sde"
		case karras:
			name = "dpmpp_2m_karras"
		}
	}
	return name, nil
}

// New builds the sampler for steps inference steps. name selects a sampler
// (see Names); "" uses the configuration's own class with its settings as
// they are. A named sampler builds its class from the same configuration,
// as diffusers' from_config does, with the settings its name implies.
func New(cfg *Config, name string, steps int, opts Options) (Sampler, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if steps < 1 || steps > MaxSteps {
		return nil, fmt.Errorf("sampler: steps must be in 1..%d, got %d", MaxSteps, steps)
	}
	var k class
	c := cfg
	label := name
	if name == "" {
		var ok bool
		k, ok = classNames[cfg.ClassName]
		if !ok {
			_, err := cfg.DefaultSampler()
			return nil, err
		}
		label, _ = cfg.DefaultSampler()
	} else {
		spec, ok := samplers[strings.ToLower(name)]
		if !ok {
			return nil, fmt.Errorf("sampler: unknown sampler %q (known: %s)", name, strings.Join(Names(), ", "))
		}
		label = strings.ToLower(name)
		k = spec.class
		if len(spec.forced) > 0 {
			c = cfg.Clone()
			for key, v := range spec.forced {
				if err := c.Set(key, v); err != nil {
					return nil, err
				}
			}
		}
	}
	p, err := c.resolve(k)
	if err != nil {
		return nil, fmt.Errorf("sampler %s: %w", label, err)
	}
	if opts.Eta < 0 {
		return nil, fmt.Errorf("sampler %s: eta must not be negative, got %g", label, opts.Eta)
	}
	var s Sampler
	switch k {
	case classEuler:
		s, err = newEuler(p, steps)
	case classEulerAncestral:
		s, err = newEulerAncestral(p, steps)
	case classHeun:
		s, err = newHeun(p, steps)
	case classDDIM:
		s, err = newDDIM(p, steps, opts.Eta)
	case classDDPM:
		s, err = newDDPM(p, steps)
	case classDPMSolver:
		s, err = newDPMSolver(p, steps)
	case classUniPC:
		s, err = newUniPC(p, steps)
	case classLCM:
		s, err = newLCM(p, steps)
	case classPNDM:
		s, err = newPNDM(p, steps)
	default:
		err = fmt.Errorf("class %s is not implemented", k)
	}
	if err != nil {
		return nil, fmt.Errorf("sampler %s: %w", label, err)
	}
	if opts.Eta > 0 && k != classDDIM {
		return nil, fmt.Errorf("sampler %s: eta applies to DDIM only", label)
	}
	setName(s, label)
	return s, nil
}

// named is embedded by every sampler to carry its name.
type named struct{ name string }

func (n *named) Name() string     { return n.name }
func (n *named) setName(s string) { n.name = s }

func setName(s Sampler, name string) {
	if ns, ok := s.(interface{ setName(string) }); ok {
		ns.setName(name)
	}
}

// predictX0 converts a model output to the clean-latent estimate for a
// sample with signal scale alpha and noise scale sigma (x = alpha·x0 +
// sigma·ε), for the configured prediction type.
func predictX0(prediction string, out, x []float32, alpha, sigma float64) []float32 {
	x0 := make([]float32, len(x))
	switch prediction {
	case "epsilon":
		for i := range x {
			x0[i] = float32((float64(x[i]) - sigma*float64(out[i])) / alpha)
		}
	case "v_prediction":
		for i := range x {
			x0[i] = float32(alpha*float64(x[i]) - sigma*float64(out[i]))
		}
	default: // "sample"
		copy(x0, out)
	}
	return x0
}

// drawNoise calls noise and checks its size.
func drawNoise(noise Noise, n int) ([]float32, error) {
	if noise == nil {
		return nil, fmt.Errorf("sampler: this sampler adds noise but no noise source was given")
	}
	z := noise()
	if len(z) != n {
		return nil, fmt.Errorf("sampler: noise source gave %d values, want %d", len(z), n)
	}
	return z, nil
}

// checkStep reports a model output or sample of the wrong size and an
// evaluation index i outside a schedule of n evaluations.
func checkStep(i, n int, out, x []float32) error {
	if len(out) != len(x) {
		return fmt.Errorf("sampler: model output has %d values, sample has %d", len(out), len(x))
	}
	if len(x) == 0 {
		return fmt.Errorf("sampler: empty sample")
	}
	if i < 0 || i >= n {
		return fmt.Errorf("sampler: evaluation index %d outside 0..%d", i, n-1)
	}
	return nil
}
