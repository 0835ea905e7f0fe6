package sample

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
)

// FlowMatchConfig is diffusers' FlowMatchEulerDiscreteScheduler config
// (scheduler_config.json of Qwen-Image, Flux, SD3, Wan).
type FlowMatchConfig struct {
	NumTrainTimesteps  int     `json:"num_train_timesteps"`
	Shift              float64 `json:"shift"`
	UseDynamicShifting bool    `json:"use_dynamic_shifting"`
	BaseShift          float64 `json:"base_shift"`
	MaxShift           float64 `json:"max_shift"`
	BaseImageSeqLen    int     `json:"base_image_seq_len"`
	MaxImageSeqLen     int     `json:"max_image_seq_len"`
	ShiftTerminal      float64 `json:"shift_terminal"`
	TimeShiftType      string  `json:"time_shift_type"`
	InvertSigmas       bool    `json:"invert_sigmas"`
	StochasticSampling bool    `json:"stochastic_sampling"`
	UseKarrasSigmas    bool    `json:"use_karras_sigmas"`
	UseExponential     bool    `json:"use_exponential_sigmas"`
	UseBetaSigmas      bool    `json:"use_beta_sigmas"`
	ClassName          string  `json:"_class_name"`
	DiffusersVersion   string  `json:"_diffusers_version"`
}

// ParseFlowMatchConfig reads a FlowMatchEulerDiscreteScheduler config with
// diffusers' defaults for absent fields; unknown fields and settings this
// package does not implement are errors.
func ParseFlowMatchConfig(data []byte) (FlowMatchConfig, error) {
	c := FlowMatchConfig{NumTrainTimesteps: 1000, Shift: 1, BaseShift: 0.5, MaxShift: 1.15, BaseImageSeqLen: 256,
		MaxImageSeqLen: 4096, TimeShiftType: "exponential"}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("flow-match scheduler config: %w", err)
	}
	switch {
	case c.ClassName != "" && c.ClassName != "FlowMatchEulerDiscreteScheduler":
		return c, fmt.Errorf("flow-match scheduler config: _class_name %q", c.ClassName)
	case c.InvertSigmas || c.StochasticSampling || c.UseKarrasSigmas || c.UseExponential || c.UseBetaSigmas:
		return c, fmt.Errorf("flow-match scheduler config: invert_sigmas, stochastic_sampling and karras/exponential/beta sigmas are not implemented")
	case c.TimeShiftType != "exponential" && c.TimeShiftType != "linear":
		return c, fmt.Errorf("flow-match scheduler config: time_shift_type %q", c.TimeShiftType)
	case c.NumTrainTimesteps < 1 || c.Shift <= 0 || c.ShiftTerminal < 0 || c.ShiftTerminal >= 1:
		return c, fmt.Errorf("flow-match scheduler config: num_train_timesteps, shift or shift_terminal out of range")
	case c.UseDynamicShifting && c.MaxImageSeqLen == c.BaseImageSeqLen:
		return c, fmt.Errorf("flow-match scheduler config: max_image_seq_len equals base_image_seq_len")
	}
	return c, nil
}

// Mu returns the resolution-dependent shift for an image of seqLen latent
// tokens (diffusers' calculate_shift): linear from base_shift at
// base_image_seq_len to max_shift at max_image_seq_len.
func (c FlowMatchConfig) Mu(seqLen int) float64 {
	m := (c.MaxShift - c.BaseShift) / float64(c.MaxImageSeqLen-c.BaseImageSeqLen)
	b := c.BaseShift - m*float64(c.BaseImageSeqLen)
	return float64(seqLen)*m + b
}

// FlowMatchSigmas returns the schedule of steps noise levels plus the final
// 0 as FlowMatchEulerDiscreteScheduler.set_timesteps gives it for the
// pipelines' sigmas linspace(1, 1/steps, steps): shifted by mu (dynamic
// shifting) or by shift, then stretched to end at shift_terminal. The
// arithmetic follows diffusers' float32.
func (c FlowMatchConfig) FlowMatchSigmas(steps int, mu float64) []float64 {
	s := make([]float32, steps)
	for i := range s {
		if steps == 1 {
			s[i] = 1
			continue
		}
		s[i] = float32(1 + float64(i)*(1/float64(steps)-1)/float64(steps-1))
	}
	if steps > 1 {
		s[steps-1] = float32(1 / float64(steps)) // numpy's linspace ends exactly at stop
	}
	for i, t := range s {
		switch {
		case c.UseDynamicShifting && c.TimeShiftType == "linear":
			s[i] = float32(mu) / (float32(mu) + (1/t - 1))
		case c.UseDynamicShifting:
			e := float32(math.Exp(mu))
			s[i] = e / (e + (1/t - 1))
		default:
			sh := float32(c.Shift)
			s[i] = sh * t / (1 + (sh-1)*t)
		}
	}
	if c.ShiftTerminal > 0 && steps > 0 {
		scale := (1 - s[steps-1]) / float32(1-c.ShiftTerminal)
		for i, t := range s {
			s[i] = 1 - (1-t)/scale
		}
	}
	out := make([]float64, steps+1)
	for i, t := range s {
		out[i] = float64(t)
	}
	return out
}

// FlowMatchEuler is the flow-matching Euler sampler: the model predicts
// the velocity v = noise − x0, and a step moves x by (σ_next − σ)·v.
type FlowMatchEuler struct {
	sigmas    []float64
	timesteps []float64
}

// NewFlowMatchEuler builds the sampler for steps evaluations over an image
// of seqLen latent tokens (patches).
func NewFlowMatchEuler(c FlowMatchConfig, steps, seqLen int) (*FlowMatchEuler, error) {
	if steps < 1 || steps > 10000 {
		return nil, fmt.Errorf("flow-match euler: %d steps: want 1 to 10000", steps)
	}
	s := c.FlowMatchSigmas(steps, c.Mu(seqLen))
	ts := make([]float64, steps)
	for i := range ts {
		ts[i] = float64(float32(s[i]) * float32(c.NumTrainTimesteps))
	}
	return &FlowMatchEuler{sigmas: s, timesteps: ts}, nil
}

var _ Sampler = (*FlowMatchEuler)(nil)

// Name returns "flow_euler".
func (s *FlowMatchEuler) Name() string { return "flow_euler" }

// Timesteps returns σ·num_train_timesteps per evaluation (the transformer
// takes it divided by 1000).
func (s *FlowMatchEuler) Timesteps() []float64 { return s.timesteps }

// Sigmas returns the noise levels, one more than the evaluations.
func (s *FlowMatchEuler) Sigmas() []float64 { return s.sigmas }

// InitNoiseSigma is 1: txt2img starts from unit noise.
func (s *FlowMatchEuler) InitNoiseSigma() float64 { return 1 }

// Order is 1.
func (s *FlowMatchEuler) Order() int { return 1 }

// ScaleModelInput returns x: flow matching feeds the sample unscaled.
func (s *FlowMatchEuler) ScaleModelInput(x []float32, _ int) []float32 { return x }

// Step returns x + (σ_{i+1} − σ_i)·v and the clean estimate x − σ_i·v.
func (s *FlowMatchEuler) Step(i int, v, x []float32, _ Noise) (next, x0 []float32, err error) {
	if i < 0 || i >= len(s.timesteps) || len(v) != len(x) {
		return nil, nil, fmt.Errorf("flow-match euler: step %d of %d, output %d values for sample %d", i, len(s.timesteps), len(v), len(x))
	}
	dt := float32(s.sigmas[i+1] - s.sigmas[i])
	sig := float32(s.sigmas[i])
	next, x0 = make([]float32, len(x)), make([]float32, len(x))
	for j := range x {
		next[j] = x[j] + dt*v[j]
		x0[j] = x[j] - sig*v[j]
	}
	return next, x0, nil
}

// AddNoise returns σ_i·noise + (1 − σ_i)·x0 (diffusers' scale_noise).
func (s *FlowMatchEuler) AddNoise(x0, noise []float32, i int) []float32 {
	sig := float32(s.sigmas[i])
	out := make([]float32, len(x0))
	for j := range x0 {
		out[j] = sig*noise[j] + (1-sig)*x0[j]
	}
	return out
}

// TrueCFG mixes conditional and unconditional predictions as Qwen-Image's
// pipelines do: c = u + scale·(cond − u), then each token's vector (rows of
// width dim) rescaled to the conditional prediction's norm. The result is
// written to cond.
func TrueCFG(cond, uncond []float32, scale float64, dim int) error {
	if len(cond) != len(uncond) || dim < 1 || len(cond)%dim != 0 {
		return fmt.Errorf("true cfg: %d and %d values in rows of %d", len(cond), len(uncond), dim)
	}
	s := float32(scale)
	row := make([]float32, dim)
	for o := 0; o < len(cond); o += dim {
		c, u := cond[o:o+dim], uncond[o:o+dim]
		var nc, nm float64
		for j := range row {
			row[j] = u[j] + s*(c[j]-u[j])
			nc += float64(c[j]) * float64(c[j])
			nm += float64(row[j]) * float64(row[j])
		}
		r := float32(math.Sqrt(nc)) / float32(math.Sqrt(nm))
		for j := range row {
			c[j] = row[j] * r
		}
	}
	return nil
}
