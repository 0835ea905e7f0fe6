package sample

import (
	"fmt"
	"math"
)

// This file holds the k-diffusion style samplers that walk a table of noise
// levels σ: Euler, Euler ancestral and Heun (diffusers' EulerDiscrete,
// EulerAncestralDiscrete and HeunDiscrete schedulers). The sample is
// x = x0 + σ·ε and the model sees x/sqrt(σ²+1).

// spacedFloatTimesteps returns the inference timesteps of the discrete
// sigma schedulers, as float32 values (largest first).
func spacedFloatTimesteps(p *params, n int) ([]float64, error) {
	T := p.numTrain
	var ts []float64
	switch p.spacing {
	case "linspace":
		ls := npLinspace(0, float64(T-1), n, true)
		ts = make([]float64, n)
		for i := range ls {
			ts[n-1-i] = float64(float32(ls[i]))
		}
	case "leading":
		ratio := T / n
		if ratio == 0 {
			return nil, fmt.Errorf("%d steps exceed num_train_timesteps %d", n, T)
		}
		ts = make([]float64, n)
		for i := 0; i < n; i++ {
			ts[n-1-i] = float64(i*ratio + p.stepsOffset)
		}
	case "trailing":
		ar := npArange(float64(T), 0, -float64(T)/float64(n))
		ts = make([]float64, len(ar))
		for i, v := range ar {
			ts[i] = math.RoundToEven(v) - 1
		}
	default:
		return nil, fmt.Errorf("timestep_spacing %q is not supported", p.spacing)
	}
	return ts, nil
}

// discreteSigmas computes the σ table (without the final entry) and the
// model timesteps of Euler and Heun: σ interpolated at the timesteps, or a
// Karras/exponential schedule spanning the interpolated range.
func discreteSigmas(p *params, tr *training, ts []float64, n int, logLinear bool) ([]float64, []float64) {
	var sig []float64
	if logLinear {
		l := torchLinspace32(float64(float32(math.Log(float64(tr.sigmas[len(tr.sigmas)-1])))),
			float64(float32(math.Log(float64(tr.sigmas[0])))), n+1)
		sig = make([]float64, len(l))
		for i, v := range l {
			sig[i] = float64(float32(math.Exp(float64(v))))
		}
	} else {
		sig = make([]float64, len(ts))
		for i, t := range ts {
			sig[i] = interp(t, tr.sigmas)
		}
	}
	switch {
	case p.karras || p.exponential:
		lo, hi := sigmaRange(p, sig[0], sig[len(sig)-1])
		if p.karras {
			sig = karrasSigmas(lo, hi, n)
		} else {
			sig = exponentialSigmas(lo, hi, n)
		}
		ts = make([]float64, len(sig))
		for i, s := range sig {
			ts[i] = float64(float32(sigmaToT(s, tr.logSigmas)))
		}
	}
	return sig, ts
}

// finalSigma is the σ appended after the last step.
func finalSigma(p *params, tr *training) float64 {
	if p.finalSigmas == "sigma_min" {
		a := tr.alphasCumprod[0]
		return float64(sqrt32((1 - a) / a))
	}
	return 0
}

// sigmaTable is the shared state of the σ-walking samplers.
type sigmaTable struct {
	named
	p         *params
	timesteps []float64
	sigmas    []float64 // float32 values
	spacing   string
}

func (s *sigmaTable) Timesteps() []float64 { return s.timesteps }
func (s *sigmaTable) Sigmas() []float64    { return s.sigmas }
func (s *sigmaTable) Order() int           { return 1 }

// InitNoiseSigma is the largest σ for linspace and trailing spacing, else
// sqrt(σmax²+1), in float32 as diffusers computes it.
func (s *sigmaTable) InitNoiseSigma() float64 {
	m := float32(0)
	for _, v := range s.sigmas {
		if float32(v) > m {
			m = float32(v)
		}
	}
	if s.spacing == "linspace" || s.spacing == "trailing" {
		return float64(m)
	}
	return float64(sqrt32(m*m + 1))
}

func (s *sigmaTable) ScaleModelInput(x []float32, i int) []float32 {
	if i < 0 || i >= len(s.sigmas) {
		return x
	}
	sig := s.sigmas[i]
	scale := math.Sqrt(sig*sig + 1)
	out := make([]float32, len(x))
	for j, v := range x {
		out[j] = float32(float64(v) / scale)
	}
	return out
}

// AddNoise returns x0 + σ_i·noise.
func (s *sigmaTable) AddNoise(x0, noise []float32, i int) []float32 {
	sig := s.sigmas[min(max(i, 0), len(s.sigmas)-1)]
	out := make([]float32, len(x0))
	for j := range x0 {
		out[j] = float32(float64(x0[j]) + float64(noise[j])*sig)
	}
	return out
}

// x0 estimates the clean latent from the model output at noise level sig.
func (s *sigmaTable) x0(out, x []float32, sig float64) []float32 {
	x0 := make([]float32, len(x))
	switch s.p.prediction {
	case "epsilon":
		for j := range x {
			x0[j] = float32(float64(x[j]) - sig*float64(out[j]))
		}
	case "v_prediction":
		a := -sig / math.Sqrt(sig*sig+1)
		b := 1 / (sig*sig + 1)
		for j := range x {
			x0[j] = float32(float64(out[j])*a + float64(x[j])*b)
		}
	default:
		copy(x0, out)
	}
	return x0
}

func float32s(a []float64) []float64 {
	out := make([]float64, len(a))
	for i, v := range a {
		out[i] = float64(float32(v))
	}
	return out
}

// euler is diffusers' EulerDiscreteScheduler (s_churn = 0).
type euler struct{ sigmaTable }

func newEuler(p *params, n int) (*euler, error) {
	tr, err := newTraining(p, true)
	if err != nil {
		return nil, err
	}
	ts, err := spacedFloatTimesteps(p, n)
	if err != nil {
		return nil, err
	}
	sig, ts := discreteSigmas(p, tr, ts, n, p.interpolation == "log_linear")
	sig = append(sig, finalSigma(p, tr))
	return &euler{sigmaTable{p: p, timesteps: float32s(ts), sigmas: float32s(sig), spacing: p.spacing}}, nil
}

func (s *euler) Step(i int, out, x []float32, _ Noise) ([]float32, []float32, error) {
	if err := checkStep(i, len(s.timesteps), out, x); err != nil {
		return nil, nil, err
	}
	sig, next := s.sigmas[i], s.sigmas[i+1]
	x0 := s.x0(out, x, sig)
	dt := next - sig
	prev := make([]float32, len(x))
	for j := range x {
		d := (float64(x[j]) - float64(x0[j])) / sig
		prev[j] = float32(float64(x[j]) + d*dt)
	}
	return prev, x0, nil
}

// eulerAncestral is diffusers' EulerAncestralDiscreteScheduler.
type eulerAncestral struct{ sigmaTable }

func newEulerAncestral(p *params, n int) (*eulerAncestral, error) {
	tr, err := newTraining(p, true)
	if err != nil {
		return nil, err
	}
	ts, err := spacedFloatTimesteps(p, n)
	if err != nil {
		return nil, err
	}
	sig := make([]float64, len(ts), len(ts)+1)
	for i, t := range ts {
		sig[i] = interp(t, tr.sigmas)
	}
	sig = append(sig, 0)
	return &eulerAncestral{sigmaTable{p: p, timesteps: ts, sigmas: float32s(sig), spacing: p.spacing}}, nil
}

func (s *eulerAncestral) Step(i int, out, x []float32, noise Noise) ([]float32, []float32, error) {
	if err := checkStep(i, len(s.timesteps), out, x); err != nil {
		return nil, nil, err
	}
	from, to := s.sigmas[i], s.sigmas[i+1]
	x0 := s.x0(out, x, from)
	up := math.Sqrt(to * to * (from*from - to*to) / (from * from))
	down := math.Sqrt(to*to - up*up)
	dt := down - from
	z, err := drawNoise(noise, len(x))
	if err != nil {
		return nil, nil, err
	}
	prev := make([]float32, len(x))
	for j := range x {
		d := (float64(x[j]) - float64(x0[j])) / from
		prev[j] = float32(float64(x[j]) + d*dt + float64(z[j])*up)
	}
	return prev, x0, nil
}

// heun is diffusers' HeunDiscreteScheduler: each step evaluates the model
// twice (Euler predictor, trapezoidal corrector), so σ and the timesteps are
// doubled except the first.
type heun struct {
	sigmaTable
	prevDeriv []float64
	dt        float64
	sample    []float32
	pending   bool
}

func newHeun(p *params, n int) (*heun, error) {
	tr, err := newTraining(p, false)
	if err != nil {
		return nil, err
	}
	ts, err := spacedFloatTimesteps(p, n)
	if err != nil {
		return nil, err
	}
	sig, ts := discreteSigmas(p, tr, ts, n, false)
	sig = append(sig, 0)
	sig = float32s(sig)
	ts = float32s(ts)
	dsig := []float64{sig[0]}
	for _, v := range sig[1 : len(sig)-1] {
		dsig = append(dsig, v, v)
	}
	dsig = append(dsig, sig[len(sig)-1])
	dts := []float64{ts[0]}
	for _, v := range ts[1:] {
		dts = append(dts, v, v)
	}
	return &heun{sigmaTable: sigmaTable{p: p, timesteps: dts, sigmas: dsig, spacing: p.spacing}}, nil
}

func (s *heun) Order() int { return 2 }

func (s *heun) Step(i int, out, x []float32, _ Noise) ([]float32, []float32, error) {
	if err := checkStep(i, len(s.timesteps), out, x); err != nil {
		return nil, nil, err
	}
	var sig, next float64
	if !s.pending {
		sig, next = s.sigmas[i], s.sigmas[i+1]
	} else {
		if i < 1 {
			return nil, nil, fmt.Errorf("sampler: Heun corrector at index 0")
		}
		sig, next = s.sigmas[i-1], s.sigmas[i]
	}
	input := sig
	if s.pending {
		input = next
	}
	var x0 []float32
	switch s.p.prediction {
	case "epsilon", "v_prediction":
		x0 = s.x0(out, x, input)
	default:
		x0 = append([]float32(nil), out...)
	}
	if s.p.clipSample {
		r := float32(s.p.clipRange)
		for j := range x0 {
			x0[j] = min(max(x0[j], -r), r)
		}
	}
	prev := make([]float32, len(x))
	if !s.pending {
		s.prevDeriv = make([]float64, len(x))
		s.dt = next - sig
		s.sample = x
		for j := range x {
			d := (float64(x[j]) - float64(x0[j])) / sig
			s.prevDeriv[j] = float64(float32(d))
			prev[j] = float32(float64(x[j]) + d*s.dt)
		}
		s.pending = true
		return prev, x0, nil
	}
	for j := range x {
		d := (float64(x[j]) - float64(x0[j])) / next
		d = (s.prevDeriv[j] + d) / 2
		prev[j] = float32(float64(s.sample[j]) + d*s.dt)
	}
	s.prevDeriv, s.sample, s.pending = nil, nil, false
	return prev, x0, nil
}
