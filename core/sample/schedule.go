package sample

import (
	"fmt"
	"math"
)

// This file reproduces the noise-schedule arithmetic of diffusers exactly,
// including where it rounds to float32 (torch tensors) and where it stays
// in float64 (numpy), so that timesteps and sigmas match to the last bits.

// torchLinspace32 is torch.linspace(start, end, n, dtype=float32) on the CPU:
// the first half counts up from start, the second half down from end, with
// a float32 step.
func torchLinspace32(start, end float64, n int) []float32 {
	out := make([]float32, n)
	if n == 1 {
		out[0] = float32(start)
		return out
	}
	s, e := float32(start), float32(end)
	step := (e - s) / float32(n-1)
	half := n / 2
	for i := range out {
		if i < half {
			out[i] = s + float32(step*float32(i))
		} else {
			out[i] = e - float32(step*float32(n-i-1))
		}
	}
	return out
}

// npLinspace is numpy.linspace(start, stop, n) in float64: i*step + start,
// with the last element set to stop when endpoint is true.
func npLinspace(start, stop float64, n int, endpoint bool) []float64 {
	out := make([]float64, n)
	div := n
	if endpoint {
		div = n - 1
	}
	if div <= 0 {
		for i := range out {
			out[i] = start
		}
		return out
	}
	step := (stop - start) / float64(div)
	for i := range out {
		if step == 0 {
			out[i] = float64(i)/float64(div)*(stop-start) + start
		} else {
			out[i] = float64(i)*step + start
		}
	}
	if endpoint && n > 1 {
		out[n-1] = stop
	}
	return out
}

// npArange is numpy.arange(start, stop, step) for floats: the length is
// ceil((stop-start)/step) and element i is start + i*delta, where delta is
// recomputed as (start+step)-start.
func npArange(start, stop, step float64) []float64 {
	n := int(math.Ceil((stop - start) / step))
	if n <= 0 {
		return nil
	}
	delta := (start + step) - start
	out := make([]float64, n)
	out[0] = start
	for i := 1; i < n; i++ {
		out[i] = start + float64(i)*delta
	}
	return out
}

// betaSchedules lists the beta schedules each class accepts.
var betaSchedules = map[class][]string{
	classEuler:          {"linear", "scaled_linear", "squaredcos_cap_v2"},
	classEulerAncestral: {"linear", "scaled_linear", "squaredcos_cap_v2"},
	classHeun:           {"linear", "scaled_linear", "squaredcos_cap_v2", "exp"},
	classDDIM:           {"linear", "scaled_linear", "squaredcos_cap_v2"},
	classDDPM:           {"linear", "scaled_linear", "squaredcos_cap_v2", "laplace", "sigmoid"},
	classDPMSolver:      {"linear", "scaled_linear", "squaredcos_cap_v2"},
	classUniPC:          {"linear", "scaled_linear", "squaredcos_cap_v2"},
	classLCM:            {"linear", "scaled_linear", "squaredcos_cap_v2"},
	classPNDM:           {"linear", "scaled_linear", "squaredcos_cap_v2"},
}

// trainBetas returns the float32 betas of the training schedule.
func trainBetas(p *params) ([]float32, error) {
	n := p.numTrain
	if p.trainedBetas != nil {
		if len(p.trainedBetas) != n {
			return nil, fmt.Errorf("trained_betas has %d values, num_train_timesteps is %d", len(p.trainedBetas), n)
		}
		out := make([]float32, n)
		for i, b := range p.trainedBetas {
			out[i] = float32(b)
		}
		return out, nil
	}
	ok := false
	for _, s := range betaSchedules[p.class] {
		if s == p.betaSchedule {
			ok = true
		}
	}
	if !ok {
		return nil, fmt.Errorf("beta_schedule %q is not implemented for %s", p.betaSchedule, p.class)
	}
	switch p.betaSchedule {
	case "linear":
		return torchLinspace32(p.betaStart, p.betaEnd, n), nil
	case "scaled_linear":
		b := torchLinspace32(math.Sqrt(p.betaStart), math.Sqrt(p.betaEnd), n)
		for i := range b {
			b[i] *= b[i]
		}
		return b, nil
	case "squaredcos_cap_v2":
		return betasForAlphaBar(n, func(t float64) float64 {
			c := math.Cos((t + 0.008) / 1.008 * math.Pi / 2)
			return c * c
		}), nil
	case "exp":
		return betasForAlphaBar(n, func(t float64) float64 { return math.Exp(t * -12.0) }), nil
	case "laplace":
		return betasForAlphaBar(n, func(t float64) float64 {
			lmb := -0.5 * math.Copysign(1, 0.5-t) * math.Log(1-2*math.Abs(0.5-t)+1e-6)
			snr := math.Exp(lmb)
			return math.Sqrt(snr / (1 + snr))
		}), nil
	case "sigmoid":
		x := torchLinspace32(-6, 6, n)
		scale, off := float32(p.betaEnd-p.betaStart), float32(p.betaStart)
		for i, v := range x {
			s := float32(1 / (1 + math.Exp(-float64(v))))
			x[i] = float32(s*scale) + off
		}
		return x, nil
	}
	return nil, fmt.Errorf("beta_schedule %q is not implemented", p.betaSchedule)
}

// betasForAlphaBar discretises a cumulative alpha function (in float64, as
// Python does) with betas capped at 0.999.
func betasForAlphaBar(n int, alphaBar func(float64) float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		t1 := float64(i) / float64(n)
		t2 := float64(i+1) / float64(n)
		out[i] = float32(math.Min(1-alphaBar(t2)/alphaBar(t1), 0.999))
	}
	return out
}

// cumprod32 is torch.cumprod on float32 data: accumulated in float64, each
// partial product rounded to float32.
func cumprod32(a []float32) []float32 {
	out := make([]float32, len(a))
	acc := 1.0
	for i, v := range a {
		acc *= float64(v)
		out[i] = float32(acc)
	}
	return out
}

func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }

// rescaleZeroTerminalSNR rescales betas so the last timestep has zero
// signal-to-noise ratio (Lin et al. 2023, algorithm 1), in float32 as
// diffusers does with torch.
func rescaleZeroTerminalSNR(betas []float32) []float32 {
	n := len(betas)
	alphas := make([]float32, n)
	for i, b := range betas {
		alphas[i] = 1 - b
	}
	ac := cumprod32(alphas)
	s := make([]float32, n)
	for i, v := range ac {
		s[i] = sqrt32(v)
	}
	s0, sT := s[0], s[n-1]
	scale := s0 / (s0 - sT)
	ab := make([]float32, n)
	for i := range s {
		v := (s[i] - sT) * scale
		ab[i] = v * v
	}
	out := make([]float32, n)
	out[0] = 1 - ab[0]
	for i := 1; i < n; i++ {
		out[i] = 1 - ab[i]/ab[i-1]
	}
	return out
}

// training is the training-time noise schedule of one class.
type training struct {
	alphasCumprod []float32 // ᾱ_t, t = 0..T-1
	sigmas        []float32 // sqrt((1-ᾱ_t)/ᾱ_t), ascending in t
	logSigmas     []float32 // log of sigmas, in float32 as numpy computes it
}

// newTraining computes ᾱ and the training sigmas. zeroSNRFix sets the last
// ᾱ to 2^-24 after a zero-terminal-SNR rescale (classes that use sigmas).
func newTraining(p *params, zeroSNRFix bool) (*training, error) {
	betas, err := trainBetas(p)
	if err != nil {
		return nil, err
	}
	if p.rescaleZeroSNR {
		betas = rescaleZeroTerminalSNR(betas)
	}
	alphas := make([]float32, len(betas))
	for i, b := range betas {
		alphas[i] = 1 - b
	}
	ac := cumprod32(alphas)
	if p.rescaleZeroSNR && zeroSNRFix {
		ac[len(ac)-1] = 1.0 / (1 << 24)
	}
	for i, v := range ac {
		if !(v > 0) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("noise schedule: cumulative alpha %g at t=%d is not positive", v, i)
		}
	}
	tr := &training{alphasCumprod: ac, sigmas: make([]float32, len(ac)), logSigmas: make([]float32, len(ac))}
	for i, v := range ac {
		tr.sigmas[i] = sqrt32((1 - v) / v)
		tr.logSigmas[i] = float32(math.Log(float64(tr.sigmas[i])))
	}
	return tr, nil
}

// interp is numpy.interp(x, arange(len(fp)), fp) in float64.
func interp(x float64, fp []float32) float64 {
	n := len(fp)
	if x <= 0 {
		return float64(fp[0])
	}
	if x >= float64(n-1) {
		return float64(fp[n-1])
	}
	j := int(math.Floor(x))
	if float64(j) == x {
		return float64(fp[j])
	}
	slope := (float64(fp[j+1]) - float64(fp[j])) / 1
	return slope*(x-float64(j)) + float64(fp[j])
}

// karrasSigmas is the schedule of Karras et al. 2022 (rho = 7) between
// sigmaMax and sigmaMin, n values, in float64 as numpy computes it.
func karrasSigmas(sigmaMin, sigmaMax float64, n int) []float64 {
	const rho = 7.0
	ramp := npLinspace(0, 1, n, true)
	minInv := math.Pow(sigmaMin, 1/rho)
	maxInv := math.Pow(sigmaMax, 1/rho)
	out := make([]float64, n)
	for i, r := range ramp {
		out[i] = math.Pow(maxInv+r*(minInv-maxInv), rho)
	}
	return out
}

// exponentialSigmas is exp(linspace(log σmax, log σmin, n)).
func exponentialSigmas(sigmaMin, sigmaMax float64, n int) []float64 {
	l := npLinspace(math.Log(sigmaMax), math.Log(sigmaMin), n, true)
	for i := range l {
		l[i] = math.Exp(l[i])
	}
	return l
}

// sigmaRange returns the σmin/σmax that the Karras and exponential
// conversions use: the configured values, else the ends of in (descending).
func sigmaRange(p *params, first, last float64) (lo, hi float64) {
	lo, hi = last, first
	if p.sigmaMin != nil {
		lo = *p.sigmaMin
	}
	if p.sigmaMax != nil {
		hi = *p.sigmaMax
	}
	return lo, hi
}

// sigmaToT maps a sigma to a fractional training timestep by linear
// interpolation in log-sigma, as diffusers' _sigma_to_t.
func sigmaToT(sigma float64, logSigmas []float32) float64 {
	logSigma := math.Log(math.Max(sigma, 1e-10))
	n := len(logSigmas)
	// low index: the last index whose log-sigma is <= logSigma (the count
	// of such entries minus one, as cumsum().argmax() finds it), clipped.
	low := 0
	count := 0
	for i, ls := range logSigmas {
		if logSigma-float64(ls) >= 0 {
			count++
			low = i
		}
	}
	if count == 0 {
		low = 0
	}
	if low > n-2 {
		low = n - 2
	}
	high := low + 1
	lo, hi := logSigmas[low], logSigmas[high]
	w := (float64(lo) - logSigma) / float64(lo-hi)
	w = math.Min(math.Max(w, 0), 1)
	return (1-w)*float64(low) + w*float64(high)
}
