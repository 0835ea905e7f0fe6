package sample

import (
	"fmt"
	"math"
)

// This file holds the multistep exponential-integrator samplers:
// DPM-Solver++ (diffusers' DPMSolverMultistepScheduler) and UniPC
// (UniPCMultistepScheduler). Both use σ tables; a sample at σ is
// x = α·x0 + σ_t·ε with α = 1/sqrt(σ²+1) and σ_t = σ·α, and the model sees
// x unscaled.

// alphaSigma converts a σ into the (α_t, σ_t) of the VP form.
func alphaSigma(sig float64) (alpha, sigmaT float64) {
	alpha = 1 / math.Sqrt(sig*sig+1)
	return alpha, sig * alpha
}

// lambda is log(α_t) − log(σ_t), the half log-SNR.
func lambda(sig float64) float64 {
	a, s := alphaSigma(sig)
	return math.Log(a) - math.Log(s)
}

// multistepTable computes the integer timesteps and σ table of the
// multistep samplers. dpm selects DPM-Solver's variants (clipped λ range,
// leading spacing over last_timestep, σ_min final from training); otherwise
// UniPC's.
func multistepTable(p *params, tr *training, n int, dpm bool) ([]int, []float64, error) {
	T := p.numTrain
	last := T
	if dpm {
		// searchsorted(flip(λ_t), lambda_min_clipped), λ in float32.
		clipped := 0
		for i := T - 1; i >= 0; i-- {
			a := tr.alphasCumprod[i]
			l := float32(math.Log(float64(sqrt32(a)))) - float32(math.Log(float64(sqrt32(1-a))))
			if float64(l) < p.lambdaMinClipped {
				clipped++
			} else {
				break
			}
		}
		last = T - clipped
	}
	var tsf []float64
	switch p.spacing {
	case "linspace":
		ls := npLinspace(0, float64(last-1), n+1, true)
		for i := n; i >= 1; i-- {
			tsf = append(tsf, math.RoundToEven(ls[i]))
		}
	case "leading":
		ratio := last / (n + 1)
		for i := n; i >= 1; i-- {
			tsf = append(tsf, float64(i*ratio+p.stepsOffset))
		}
	case "trailing":
		for _, v := range npArange(float64(last), 0, -float64(T)/float64(n)) {
			tsf = append(tsf, math.RoundToEven(v)-1)
		}
	default:
		return nil, nil, fmt.Errorf("timestep_spacing %q is not supported", p.spacing)
	}
	var sig []float64
	trainSig := tr.sigmas
	nT := len(trainSig)
	switch {
	case p.karras || p.exponential:
		lo, hi := sigmaRange(p, float64(trainSig[nT-1]), float64(trainSig[0]))
		if p.karras {
			sig = karrasSigmas(lo, hi, n)
		} else {
			sig = exponentialSigmas(lo, hi, n)
		}
		tsf = make([]float64, len(sig))
		for i, s := range sig {
			tsf[i] = sigmaToT(s, tr.logSigmas)
			if p.karras && (!dpm || p.betaSchedule != "squaredcos_cap_v2") {
				tsf[i] = math.RoundToEven(tsf[i])
			}
		}
	case dpm && p.luLambdas:
		lmax := float64(tr.logSigmas[nT-1])
		lmin := float64(tr.logSigmas[0])
		ramp := npLinspace(0, 1, n, true)
		sig = make([]float64, n)
		tsf = make([]float64, n)
		for i, r := range ramp {
			sig[i] = math.Exp(lmax + r*(lmin-lmax))
			tsf[i] = sigmaToT(sig[i], tr.logSigmas)
			if p.betaSchedule != "squaredcos_cap_v2" {
				tsf[i] = math.RoundToEven(tsf[i])
			}
		}
	default:
		sig = make([]float64, len(tsf))
		for i, t := range tsf {
			sig[i] = interp(t, tr.sigmas)
		}
	}
	final := 0.0
	if p.finalSigmas == "sigma_min" {
		if !dpm && (p.karras || p.exponential) {
			final = sig[len(sig)-1]
		} else {
			final = finalSigma(p, tr)
		}
	}
	sig = float32s(append(sig, final))
	ts := make([]int, len(tsf))
	for i, t := range tsf {
		ts[i] = int(t) // torch .to(int64) truncates
		if ts[i] < 0 || ts[i] >= T {
			return nil, nil, fmt.Errorf("timestep %d outside 0..%d", ts[i], T-1)
		}
	}
	return ts, sig, nil
}

// multistepBase holds what DPM-Solver and UniPC share.
type multistepBase struct {
	named
	p       *params
	ts      []int
	sigmas  []float64
	outputs [][]float32 // converted model outputs, oldest first, len = solver order
	lower   int         // lower_order_nums
}

func (s *multistepBase) Timesteps() []float64 {
	out := make([]float64, len(s.ts))
	for i, t := range s.ts {
		out[i] = float64(t)
	}
	return out
}
func (s *multistepBase) Sigmas() []float64                            { return s.sigmas }
func (s *multistepBase) InitNoiseSigma() float64                      { return 1 }
func (s *multistepBase) Order() int                                   { return 1 }
func (s *multistepBase) ScaleModelInput(x []float32, _ int) []float32 { return x }

// AddNoise returns α·x0 + σ_t·noise at the σ of evaluation i.
func (s *multistepBase) AddNoise(x0, noise []float32, i int) []float32 {
	a, st := alphaSigma(s.sigmas[min(max(i, 0), len(s.sigmas)-1)])
	out := make([]float32, len(x0))
	for j := range x0 {
		out[j] = float32(a*float64(x0[j]) + st*float64(noise[j]))
	}
	return out
}

// push appends a converted model output to the history.
func (s *multistepBase) push(m []float32) {
	copy(s.outputs, s.outputs[1:])
	s.outputs[len(s.outputs)-1] = m
}

// hist returns the k-th most recent converted output (0 = latest).
func (s *multistepBase) hist(k int) []float32 { return s.outputs[len(s.outputs)-1-k] }

// dpmSolver is DPM-Solver++ (Lu et al. 2022) in its multistep form, orders
// 1 to 3, deterministic or SDE.
type dpmSolver struct{ multistepBase }

func newDPMSolver(p *params, n int) (*dpmSolver, error) {
	tr, err := newTraining(p, true)
	if err != nil {
		return nil, err
	}
	ts, sig, err := multistepTable(p, tr, n, true)
	if err != nil {
		return nil, err
	}
	return &dpmSolver{multistepBase{p: p, ts: ts, sigmas: sig, outputs: make([][]float32, p.solverOrder)}}, nil
}

func (s *dpmSolver) Step(i int, out, x []float32, noise Noise) ([]float32, []float32, error) {
	if err := checkStep(i, len(s.ts), out, x); err != nil {
		return nil, nil, err
	}
	p := s.p
	n := len(s.ts)
	lowerFinal := i == n-1 && (p.eulerAtFinal || (p.lowerOrderFinal && n < 15) || p.finalSigmas == "zero")
	lowerSecond := i == n-2 && p.lowerOrderFinal && n < 15
	a0, s0 := alphaSigma(s.sigmas[i])
	m := predictX0(p.prediction, out, x, a0, s0)
	s.push(m)
	var z []float32
	sde := p.algorithm == "sde-dpmsolver++"
	if sde {
		var err error
		if z, err = drawNoise(noise, len(x)); err != nil {
			return nil, nil, err
		}
	}
	var prev []float32
	switch {
	case p.solverOrder == 1 || s.lower < 1 || lowerFinal:
		prev = s.first(i, x, z)
	case p.solverOrder == 2 || s.lower < 2 || lowerSecond:
		prev = s.second(i, x, z)
	default:
		prev = s.third(i, x, z)
	}
	if s.lower < p.solverOrder {
		s.lower++
	}
	return prev, m, nil
}

func (s *dpmSolver) first(i int, x, z []float32) []float32 {
	at, st := alphaSigma(s.sigmas[i+1])
	_, ss := alphaSigma(s.sigmas[i])
	h := lambda(s.sigmas[i+1]) - lambda(s.sigmas[i])
	m0 := s.hist(0)
	prev := make([]float32, len(x))
	if z == nil {
		cx, cm := st/ss, -at*(math.Exp(-h)-1)
		for j := range x {
			prev[j] = float32(cx*float64(x[j]) + cm*float64(m0[j]))
		}
		return prev
	}
	cx := st / ss * math.Exp(-h)
	cm := at * (1 - math.Exp(-2*h))
	cz := st * math.Sqrt(1-math.Exp(-2*h))
	for j := range x {
		prev[j] = float32(cx*float64(x[j]) + cm*float64(m0[j]) + cz*float64(z[j]))
	}
	return prev
}

func (s *dpmSolver) second(i int, x, z []float32) []float32 {
	at, st := alphaSigma(s.sigmas[i+1])
	_, s0 := alphaSigma(s.sigmas[i])
	lt, l0, l1 := lambda(s.sigmas[i+1]), lambda(s.sigmas[i]), lambda(s.sigmas[i-1])
	m0, m1 := s.hist(0), s.hist(1)
	h, h0 := lt-l0, l0-l1
	r0 := h0 / h
	prev := make([]float32, len(x))
	midpoint := s.p.solverType == "midpoint"
	if z == nil {
		cx := st / s0
		c0 := -at * (math.Exp(-h) - 1)
		var c1 float64
		if midpoint {
			c1 = -0.5 * (at * (math.Exp(-h) - 1))
		} else {
			c1 = at * ((math.Exp(-h)-1)/h + 1)
		}
		for j := range x {
			d1 := (float64(m0[j]) - float64(m1[j])) / r0
			prev[j] = float32(cx*float64(x[j]) + c0*float64(m0[j]) + c1*d1)
		}
		return prev
	}
	cx := st / s0 * math.Exp(-h)
	c0 := at * (1 - math.Exp(-2*h))
	var c1 float64
	if midpoint {
		c1 = 0.5 * (at * (1 - math.Exp(-2*h)))
	} else {
		c1 = at * ((1-math.Exp(-2*h))/(-2*h) + 1)
	}
	cz := st * math.Sqrt(1-math.Exp(-2*h))
	for j := range x {
		d1 := (float64(m0[j]) - float64(m1[j])) / r0
		prev[j] = float32(cx*float64(x[j]) + c0*float64(m0[j]) + c1*d1 + cz*float64(z[j]))
	}
	return prev
}

func (s *dpmSolver) third(i int, x, z []float32) []float32 {
	at, st := alphaSigma(s.sigmas[i+1])
	_, s0 := alphaSigma(s.sigmas[i])
	lt, l0, l1, l2 := lambda(s.sigmas[i+1]), lambda(s.sigmas[i]), lambda(s.sigmas[i-1]), lambda(s.sigmas[i-2])
	m0, m1, m2 := s.hist(0), s.hist(1), s.hist(2)
	h, h0, h1 := lt-l0, l0-l1, l1-l2
	r0, r1 := h0/h, h1/h
	prev := make([]float32, len(x))
	eh := math.Exp(-h)
	for j := range x {
		d10 := (float64(m0[j]) - float64(m1[j])) / r0
		d11 := (float64(m1[j]) - float64(m2[j])) / r1
		d1 := d10 + r0/(r0+r1)*(d10-d11)
		d2 := (d10 - d11) / (r0 + r1)
		var v float64
		if z == nil {
			v = st/s0*float64(x[j]) - at*(eh-1)*float64(m0[j]) + at*((eh-1)/h+1)*d1 - at*((eh-1+h)/(h*h)-0.5)*d2
		} else {
			e2 := math.Exp(-2 * h)
			v = st/s0*eh*float64(x[j]) + at*(1-e2)*float64(m0[j]) + at*((1-e2)/(-2*h)+1)*d1 +
				at*((1-e2-2*h)/(4*h*h)-0.5)*d2 + st*math.Sqrt(1-e2)*float64(z[j])
		}
		prev[j] = float32(v)
	}
	return prev
}

// uniPC is UniPC (Zhao et al. 2023): a B(h) predictor with a corrector that
// reuses the next model evaluation, orders 1 to 3.
type uniPC struct {
	multistepBase
	lastSample []float32
	thisOrder  int
	disabled   map[int]bool
}

func newUniPC(p *params, n int) (*uniPC, error) {
	tr, err := newTraining(p, true)
	if err != nil {
		return nil, err
	}
	ts, sig, err := multistepTable(p, tr, n, false)
	if err != nil {
		return nil, err
	}
	dis := map[int]bool{}
	for _, d := range p.disableCorrector {
		dis[d] = true
	}
	return &uniPC{multistepBase: multistepBase{p: p, ts: ts, sigmas: sig, outputs: make([][]float32, p.solverOrder)}, disabled: dis}, nil
}

// convert turns the model output at evaluation i into UniPC's working
// quantity: x0 when predict_x0, else ε.
func (s *uniPC) convert(out, x []float32, i int) []float32 {
	a, st := alphaSigma(s.sigmas[i])
	if s.p.predictX0 {
		return predictX0(s.p.prediction, out, x, a, st)
	}
	eps := make([]float32, len(x))
	switch s.p.prediction {
	case "epsilon":
		copy(eps, out)
	case "v_prediction":
		for j := range x {
			eps[j] = float32(a*float64(out[j]) + st*float64(x[j]))
		}
	default:
		for j := range x {
			eps[j] = float32((float64(x[j]) - a*float64(out[j])) / st)
		}
	}
	return eps
}

func (s *uniPC) Step(i int, out, x []float32, _ Noise) ([]float32, []float32, error) {
	if err := checkStep(i, len(s.ts), out, x); err != nil {
		return nil, nil, err
	}
	useCorrector := i > 0 && !s.disabled[i-1] && s.lastSample != nil
	m := s.convert(out, x, i)
	if useCorrector {
		x = s.correct(m, s.lastSample, x, i, s.thisOrder)
	}
	s.push(m)
	order := s.p.solverOrder
	if s.p.lowerOrderFinal {
		order = min(order, len(s.ts)-i)
	}
	s.thisOrder = min(order, s.lower+1)
	s.lastSample = x
	prev := s.predict(x, i, s.thisOrder)
	if s.lower < s.p.solverOrder {
		s.lower++
	}
	x0 := m
	if !s.p.predictX0 {
		a, st := alphaSigma(s.sigmas[i])
		x0 = predictX0("epsilon", m, x, a, st)
	}
	return prev, x0, nil
}

// bhCoefficients returns h_φ1, B(h) and the right-hand side b of UniPC's
// order conditions for step size h (computed with −h for x0 prediction).
func (s *uniPC) bhCoefficients(h float64, order int) (hPhi1, bh float64, b []float64) {
	hh := h
	if s.p.predictX0 {
		hh = -h
	}
	hPhi1 = math.Expm1(hh)
	hPhiK := hPhi1/hh - 1
	fact := 1.0
	if s.p.solverType == "bh1" {
		bh = hh
	} else {
		bh = math.Expm1(hh)
	}
	for k := 1; k <= order; k++ {
		b = append(b, hPhiK*fact/bh)
		fact *= float64(k + 1)
		hPhiK = hPhiK/hh - 1/fact
	}
	return hPhi1, bh, b
}

// uniTerms holds what UniPC's predictor and corrector share for the
// update from sigmas[from] to sigmas[from+1]: α and σ_t at both ends, the
// log-SNR step h, the newest model output m0, and for each older output
// its step ratio r_k (a final 1 appended) and scaled difference D1_k.
type uniTerms struct {
	at, st, a0, s0, h float64
	m0                []float32
	rks               []float64
	d1s               [][]float64
}

func (s *uniPC) terms(from, order, n int) uniTerms {
	sigT, sig0 := s.sigmas[from+1], s.sigmas[from]
	var u uniTerms
	u.at, u.st = alphaSigma(sigT)
	u.a0, u.s0 = alphaSigma(sig0)
	l0 := lambda(sig0)
	u.h = lambda(sigT) - l0
	u.m0 = s.hist(0)
	for k := 1; k < order; k++ {
		rk := (lambda(s.sigmas[from-k]) - l0) / u.h
		u.rks = append(u.rks, rk)
		mi := s.hist(k)
		d := make([]float64, n)
		for j := range d {
			d[j] = (float64(mi[j]) - float64(u.m0[j])) / rk
		}
		u.d1s = append(u.d1s, d)
	}
	u.rks = append(u.rks, 1)
	return u
}

// predict is UniPC's predictor (multistep_uni_p_bh_update).
func (s *uniPC) predict(x []float32, i, order int) []float32 {
	u := s.terms(i, order, len(x))
	hPhi1, bh, b := s.bhCoefficients(u.h, order)
	var rhos []float64
	if len(u.d1s) > 0 {
		if order == 2 {
			rhos = []float64{0.5}
		} else {
			rhos = solveVandermonde(u.rks[:len(u.rks)-1], b[:len(b)-1])
		}
	}
	prev := make([]float32, len(x))
	for j := range x {
		var res float64
		for k, r := range rhos {
			res += r * u.d1s[k][j]
		}
		var v float64
		if s.p.predictX0 {
			v = u.st/u.s0*float64(x[j]) - u.at*hPhi1*float64(u.m0[j]) - u.at*bh*res
		} else {
			v = u.at/u.a0*float64(x[j]) - u.st*hPhi1*float64(u.m0[j]) - u.st*bh*res
		}
		prev[j] = float32(v)
	}
	return prev
}

// correct is UniPC's corrector (multistep_uni_c_bh_update): it refines the
// sample x_t reached from lastSample using the new model output mt.
func (s *uniPC) correct(mt, last, xt []float32, i, order int) []float32 {
	u := s.terms(i-1, order, len(last))
	hPhi1, bh, b := s.bhCoefficients(u.h, order)
	var rhos []float64
	if order == 1 {
		rhos = []float64{0.5}
	} else {
		rhos = solveVandermonde(u.rks, b)
	}
	out := make([]float32, len(xt))
	rl := rhos[len(rhos)-1]
	for j := range xt {
		var res float64
		for k := range u.d1s {
			res += rhos[k] * u.d1s[k][j]
		}
		d1t := float64(mt[j]) - float64(u.m0[j])
		var v float64
		if s.p.predictX0 {
			v = u.st/u.s0*float64(last[j]) - u.at*hPhi1*float64(u.m0[j]) - u.at*bh*(res+rl*d1t)
		} else {
			v = u.at/u.a0*float64(last[j]) - u.st*hPhi1*float64(u.m0[j]) - u.st*bh*(res+rl*d1t)
		}
		out[j] = float32(v)
	}
	return out
}

// solveVandermonde solves R·ρ = b where row k of R holds r_j^k (the
// matrix UniPC stacks from powers of the step ratios), by Gaussian
// elimination with partial pivoting.
func solveVandermonde(r, b []float64) []float64 {
	n := len(b)
	a := make([][]float64, n)
	for k := 0; k < n; k++ {
		a[k] = make([]float64, n+1)
		for j := 0; j < n; j++ {
			a[k][j] = math.Pow(r[j], float64(k))
		}
		a[k][n] = b[k]
	}
	for c := 0; c < n; c++ {
		piv := c
		for k := c + 1; k < n; k++ {
			if math.Abs(a[k][c]) > math.Abs(a[piv][c]) {
				piv = k
			}
		}
		a[c], a[piv] = a[piv], a[c]
		for k := c + 1; k < n; k++ {
			f := a[k][c] / a[c][c]
			for j := c; j <= n; j++ {
				a[k][j] -= f * a[c][j]
			}
		}
	}
	x := make([]float64, n)
	for k := n - 1; k >= 0; k-- {
		v := a[k][n]
		for j := k + 1; j < n; j++ {
			v -= a[k][j] * x[j]
		}
		x[k] = v / a[k][k]
	}
	return x
}
