package sample

import (
	"fmt"
	"math"
	"sort"
)

// class is one diffusers scheduler class that Kiln implements.
type class int

const (
	classEuler class = iota
	classEulerAncestral
	classHeun
	classDDIM
	classDDPM
	classDPMSolver
	classUniPC
	classLCM
	classPNDM
)

// classNames maps diffusers class names to classes.
var classNames = map[string]class{
	"EulerDiscreteScheduler":          classEuler,
	"EulerAncestralDiscreteScheduler": classEulerAncestral,
	"HeunDiscreteScheduler":           classHeun,
	"DDIMScheduler":                   classDDIM,
	"DDPMScheduler":                   classDDPM,
	"DPMSolverMultistepScheduler":     classDPMSolver,
	"UniPCMultistepScheduler":         classUniPC,
	"LCMScheduler":                    classLCM,
	"PNDMScheduler":                   classPNDM,
}

func (c class) String() string {
	for n, k := range classNames {
		if k == c {
			return n
		}
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// inf is +Inf, for the DPM-Solver default of lambda_min_clipped (-inf).
var inf = math.Inf(1)

// classDefaults holds, per class, every __init__ argument of the diffusers
// class with its default value (diffusers 0.40). Keys absent from a class are
// not used by it.
var classDefaults = map[class]map[string]any{
	classEuler: {
		"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
		"trained_betas": nil, "prediction_type": "epsilon", "interpolation_type": "linear",
		"use_karras_sigmas": false, "use_exponential_sigmas": false, "use_beta_sigmas": false,
		"sigma_min": nil, "sigma_max": nil, "timestep_spacing": "linspace", "timestep_type": "discrete",
		"steps_offset": 0, "rescale_betas_zero_snr": false, "final_sigmas_type": "zero",
	},
	classEulerAncestral: {
		"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
		"trained_betas": nil, "prediction_type": "epsilon", "timestep_spacing": "linspace",
		"steps_offset": 0, "rescale_betas_zero_snr": false,
	},
	classHeun: {
		"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear",
		"trained_betas": nil, "prediction_type": "epsilon", "use_karras_sigmas": false,
		"use_exponential_sigmas": false, "use_beta_sigmas": false, "clip_sample": false,
		"clip_sample_range": 1.0, "timestep_spacing": "linspace", "steps_offset": 0,
	},
	classDDIM: {
		"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
		"trained_betas": nil, "clip_sample": true, "set_alpha_to_one": true, "steps_offset": 0,
		"prediction_type": "epsilon", "thresholding": false, "dynamic_thresholding_ratio": 0.995,
		"clip_sample_range": 1.0, "sample_max_value": 1.0, "timestep_spacing": "leading",
		"rescale_betas_zero_snr": false,
	},
	classDDPM: {
		"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
		"trained_betas": nil, "variance_type": "fixed_small", "clip_sample": true,
		"prediction_type": "epsilon", "thresholding": false, "dynamic_thresholding_ratio": 0.995,
		"clip_sample_range": 1.0, "sample_max_value": 1.0, "timestep_spacing": "leading",
		"steps_offset": 0, "rescale_betas_zero_snr": false,
	},
	classDPMSolver: {
		"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
		"trained_betas": nil, "solver_order": 2, "prediction_type": "epsilon", "thresholding": false,
		"dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "dpmsolver++",
		"solver_type": "midpoint", "lower_order_final": true, "euler_at_final": false,
		"use_karras_sigmas": false, "use_exponential_sigmas": false, "use_beta_sigmas": false,
		"use_lu_lambdas": false, "use_flow_sigmas": false, "flow_shift": 1.0, "final_sigmas_type": "zero",
		"lambda_min_clipped": -inf, "variance_type": nil, "timestep_spacing": "linspace",
		"steps_offset": 0, "rescale_betas_zero_snr": false, "use_dynamic_shifting": false,
		"time_shift_type": "exponential",
	},
	classUniPC: {
		"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
		"trained_betas": nil, "solver_order": 2, "prediction_type": "epsilon", "thresholding": false,
		"dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "predict_x0": true,
		"solver_type": "bh2", "lower_order_final": true, "disable_corrector": []int{}, "solver_p": nil,
		"use_karras_sigmas": false, "use_exponential_sigmas": false, "use_beta_sigmas": false,
		"use_flow_sigmas": false, "flow_shift": 1.0, "timestep_spacing": "linspace", "steps_offset": 0,
		"final_sigmas_type": "zero", "rescale_betas_zero_snr": false, "use_dynamic_shifting": false,
		"time_shift_type": "exponential", "sigma_min": nil, "sigma_max": nil, "shift_terminal": nil,
	},
	classLCM: {
		"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
		"trained_betas": nil, "original_inference_steps": 50, "clip_sample": false, "clip_sample_range": 1.0,
		"set_alpha_to_one": true, "steps_offset": 0, "prediction_type": "epsilon", "thresholding": false,
		"dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "timestep_spacing": "leading",
		"timestep_scaling": 10.0, "rescale_betas_zero_snr": false,
	},
	classPNDM: {
		"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
		"trained_betas": nil, "skip_prk_steps": false, "set_alpha_to_one": false,
		"prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 0,
	},
}

// maxTrainTimesteps bounds num_train_timesteps (real models use 1000).
const maxTrainTimesteps = 100000

// params is a configuration resolved for one class: the class defaults
// overridden by the keys the file sets.
type params struct {
	class            class
	numTrain         int
	betaStart        float64
	betaEnd          float64
	betaSchedule     string
	trainedBetas     []float64
	prediction       string
	interpolation    string
	karras           bool
	exponential      bool
	sigmaMin         *float64
	sigmaMax         *float64
	spacing          string
	stepsOffset      int
	rescaleZeroSNR   bool
	finalSigmas      string
	clipSample       bool
	clipRange        float64
	setAlphaToOne    bool
	varianceType     string
	skipPRK          bool
	solverOrder      int
	algorithm        string
	solverType       string
	lowerOrderFinal  bool
	eulerAtFinal     bool
	luLambdas        bool
	lambdaMinClipped float64
	predictX0        bool
	disableCorrector []int
	originalSteps    int
	timestepScaling  float64
}

// Resolved returns the configuration a class would be built with: every
// argument of the class with its value (defaults filled in), as diffusers
// reports it in scheduler.config. className is a diffusers class name.
func (c *Config) Resolved(className string) (map[string]any, error) {
	k, ok := classNames[className]
	if !ok {
		return nil, fmt.Errorf("scheduler: class %q is not supported", className)
	}
	return c.resolvedMap(k), nil
}

func (c *Config) resolvedMap(k class) map[string]any {
	m := map[string]any{}
	for key, def := range classDefaults[k] {
		m[key] = def
		if v, ok := c.values[key]; ok {
			m[key] = v
		}
	}
	return m
}

// resolve builds the typed parameters of class k and refuses settings that
// Kiln does not implement for it.
func (c *Config) resolve(k class) (*params, error) {
	m := c.resolvedMap(k)
	p := &params{class: k}
	var errs []string
	str := func(key string) string {
		if s, ok := m[key].(string); ok {
			return s
		}
		return ""
	}
	boolean := func(key string) bool {
		b, _ := m[key].(bool)
		return b
	}
	integer := func(key string) int {
		i, _ := m[key].(int)
		return i
	}
	float := func(key string) float64 {
		switch v := m[key].(type) {
		case float64:
			return v
		case int:
			return float64(v)
		}
		return 0
	}
	// nullable optional float, also read when the class does not take it
	// (diffusers keeps unknown keys in the config, and its Karras
	// conversion looks them up by name).
	optFloat := func(key string) *float64 {
		v, ok := c.values[key]
		if !ok {
			v = m[key]
		}
		switch f := v.(type) {
		case float64:
			return &f
		case int:
			g := float64(f)
			return &g
		}
		return nil
	}
	p.numTrain = integer("num_train_timesteps")
	p.betaStart = float("beta_start")
	p.betaEnd = float("beta_end")
	p.betaSchedule = str("beta_schedule")
	if tb, ok := m["trained_betas"].([]float64); ok {
		p.trainedBetas = tb
	}
	p.prediction = str("prediction_type")
	p.interpolation = str("interpolation_type")
	p.karras = boolean("use_karras_sigmas")
	p.exponential = boolean("use_exponential_sigmas")
	p.sigmaMin = optFloat("sigma_min")
	p.sigmaMax = optFloat("sigma_max")
	p.spacing = str("timestep_spacing")
	p.stepsOffset = integer("steps_offset")
	p.rescaleZeroSNR = boolean("rescale_betas_zero_snr")
	p.finalSigmas = str("final_sigmas_type")
	p.clipSample = boolean("clip_sample")
	p.clipRange = float("clip_sample_range")
	p.setAlphaToOne = boolean("set_alpha_to_one")
	p.varianceType = str("variance_type")
	p.skipPRK = boolean("skip_prk_steps")
	p.solverOrder = integer("solver_order")
	p.algorithm = str("algorithm_type")
	p.solverType = str("solver_type")
	p.lowerOrderFinal = boolean("lower_order_final")
	p.eulerAtFinal = boolean("euler_at_final")
	p.luLambdas = boolean("use_lu_lambdas")
	p.lambdaMinClipped = float("lambda_min_clipped")
	p.predictX0 = boolean("predict_x0")
	if dc, ok := m["disable_corrector"].([]int); ok {
		p.disableCorrector = dc
	}
	p.originalSteps = integer("original_inference_steps")
	p.timestepScaling = float("timestep_scaling")

	// Settings that exist in diffusers but that Kiln does not implement.
	unsupportedTrue := []string{"use_beta_sigmas", "use_flow_sigmas", "use_dynamic_shifting", "thresholding"}
	for _, key := range unsupportedTrue {
		if _, takes := m[key]; takes && boolean(key) {
			errs = append(errs, fmt.Sprintf("%s=true is not supported", key))
		}
	}
	if tt, takes := m["timestep_type"]; takes && tt != nil && tt != "discrete" {
		errs = append(errs, fmt.Sprintf("timestep_type %q is not supported", tt))
	}
	if p.numTrain <= 1 || p.numTrain > maxTrainTimesteps {
		errs = append(errs, fmt.Sprintf("num_train_timesteps %d must be in 2..%d", p.numTrain, maxTrainTimesteps))
	}
	switch p.prediction {
	case "epsilon", "v_prediction":
	case "sample":
		if k == classEulerAncestral {
			errs = append(errs, "prediction_type \"sample\" is not implemented by EulerAncestralDiscreteScheduler")
		}
	default:
		errs = append(errs, fmt.Sprintf("prediction_type %q is not supported", p.prediction))
	}
	if _, takes := m["timestep_spacing"]; takes {
		switch p.spacing {
		case "linspace", "leading", "trailing":
		default:
			errs = append(errs, fmt.Sprintf("timestep_spacing %q is not supported", p.spacing))
		}
	}
	if _, takes := m["final_sigmas_type"]; takes {
		switch p.finalSigmas {
		case "zero", "sigma_min":
		default:
			errs = append(errs, fmt.Sprintf("final_sigmas_type %q is not supported", p.finalSigmas))
		}
	}
	if k == classEuler {
		switch p.interpolation {
		case "linear", "log_linear":
		default:
			errs = append(errs, fmt.Sprintf("interpolation_type %q is not supported", p.interpolation))
		}
	}
	if p.karras && p.exponential {
		errs = append(errs, "use_karras_sigmas and use_exponential_sigmas cannot both be set")
	}
	switch k {
	case classDDPM:
		switch p.varianceType {
		case "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log":
		default:
			errs = append(errs, fmt.Sprintf("variance_type %q is not supported (learned variances need a model that predicts them)", p.varianceType))
		}
	case classDPMSolver:
		if m["variance_type"] != nil {
			errs = append(errs, fmt.Sprintf("variance_type %v is not supported", m["variance_type"]))
		}
		switch p.algorithm {
		case "dpmsolver++", "sde-dpmsolver++":
		case "deis":
			p.algorithm = "dpmsolver++"
		default:
			errs = append(errs, fmt.Sprintf("algorithm_type %q is not supported (use dpmsolver++ or sde-dpmsolver++)", p.algorithm))
		}
		switch p.solverType {
		case "midpoint", "heun":
		case "logrho", "bh1", "bh2":
			p.solverType = "midpoint"
		default:
			errs = append(errs, fmt.Sprintf("solver_type %q is not supported", p.solverType))
		}
		if p.solverOrder < 1 || p.solverOrder > 3 {
			errs = append(errs, fmt.Sprintf("solver_order %d is not supported (1 to 3)", p.solverOrder))
		}
	case classUniPC:
		switch p.solverType {
		case "bh1", "bh2":
		case "midpoint", "heun", "logrho":
			p.solverType = "bh2"
		default:
			errs = append(errs, fmt.Sprintf("solver_type %q is not supported", p.solverType))
		}
		if p.solverOrder < 1 || p.solverOrder > 3 {
			errs = append(errs, fmt.Sprintf("solver_order %d is not supported (1 to 3)", p.solverOrder))
		}
	case classLCM:
		if p.originalSteps < 1 || p.originalSteps > p.numTrain {
			errs = append(errs, fmt.Sprintf("original_inference_steps %d must be in 1..%d", p.originalSteps, p.numTrain))
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, fmt.Errorf("scheduler %s: %s", k, joinErrs(errs))
	}
	return p, nil
}

func joinErrs(errs []string) string {
	s := errs[0]
	for _, e := range errs[1:] {
		s += "; " + e
	}
	return s
}
