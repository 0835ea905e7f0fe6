package sample

import (
	"fmt"
	"math"
)

// This file holds the samplers that index the training schedule ᾱ_t by
// integer timestep: DDIM, DDPM, PNDM (PLMS) and LCM. The sample is
// x = sqrt(ᾱ)·x0 + sqrt(1-ᾱ)·ε and the model sees x unscaled.

// spacedIntTimesteps returns the integer inference timesteps of DDIM and
// DDPM (largest first).
func spacedIntTimesteps(p *params, n int) ([]int, error) {
	T := p.numTrain
	if n > T {
		return nil, fmt.Errorf("%d steps exceed num_train_timesteps %d", n, T)
	}
	ts := make([]int, 0, n)
	switch p.spacing {
	case "linspace":
		ls := npLinspace(0, float64(T-1), n, true)
		for i := n - 1; i >= 0; i-- {
			ts = append(ts, int(math.RoundToEven(ls[i])))
		}
	case "leading":
		ratio := T / n
		for i := n - 1; i >= 0; i-- {
			ts = append(ts, i*ratio+p.stepsOffset)
		}
	case "trailing":
		for _, v := range npArange(float64(T), 0, -float64(T)/float64(n)) {
			ts = append(ts, int(math.RoundToEven(v))-1)
		}
	default:
		return nil, fmt.Errorf("timestep_spacing %q is not supported", p.spacing)
	}
	for _, t := range ts {
		if t < 0 || t >= T {
			return nil, fmt.Errorf("timestep %d outside 0..%d (steps_offset %d)", t, T-1, p.stepsOffset)
		}
	}
	return ts, nil
}

// alphaTable is the shared state of the ᾱ-indexed samplers.
type alphaTable struct {
	named
	p          *params
	tr         *training
	ts         []int
	finalAlpha float64 // ᾱ used when the previous timestep is < 0
}

func (s *alphaTable) Timesteps() []float64 {
	out := make([]float64, len(s.ts))
	for i, t := range s.ts {
		out[i] = float64(t)
	}
	return out
}
func (s *alphaTable) Sigmas() []float64                            { return nil }
func (s *alphaTable) InitNoiseSigma() float64                      { return 1 }
func (s *alphaTable) Order() int                                   { return 1 }
func (s *alphaTable) ScaleModelInput(x []float32, _ int) []float32 { return x }

// alpha returns ᾱ_t, or the final alpha for t < 0.
func (s *alphaTable) alpha(t int) float64 {
	if t < 0 {
		return s.finalAlpha
	}
	return float64(s.tr.alphasCumprod[t])
}

// AddNoise returns sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·noise for t = timestep i.
func (s *alphaTable) AddNoise(x0, noise []float32, i int) []float32 {
	a := float64(s.tr.alphasCumprod[s.ts[min(max(i, 0), len(s.ts)-1)]])
	sa, sb := math.Sqrt(a), math.Sqrt(1-a)
	out := make([]float32, len(x0))
	for j := range x0 {
		out[j] = float32(sa*float64(x0[j]) + sb*float64(noise[j]))
	}
	return out
}

// x0eps converts the model output at ᾱ = a into the clean-latent and noise
// estimates.
func (s *alphaTable) x0eps(out, x []float32, a float64) (x0, eps []float32) {
	sa, sb := math.Sqrt(a), math.Sqrt(1-a)
	x0 = make([]float32, len(x))
	eps = make([]float32, len(x))
	for j := range x {
		xv, o := float64(x[j]), float64(out[j])
		switch s.p.prediction {
		case "epsilon":
			x0[j] = float32((xv - sb*o) / sa)
			eps[j] = out[j]
		case "v_prediction":
			x0[j] = float32(sa*xv - sb*o)
			eps[j] = float32(sa*o + sb*xv)
		default:
			x0[j] = out[j]
			eps[j] = float32((xv - sa*o) / sb)
		}
	}
	return x0, eps
}

func (s *alphaTable) clip(x0 []float32) {
	if !s.p.clipSample {
		return
	}
	r := float32(s.p.clipRange)
	for j := range x0 {
		x0[j] = min(max(x0[j], -r), r)
	}
}

func newAlphaTable(p *params, ts []int) (*alphaTable, error) {
	tr, err := newTraining(p, false)
	if err != nil {
		return nil, err
	}
	final := 1.0
	if !p.setAlphaToOne {
		final = float64(tr.alphasCumprod[0])
	}
	return &alphaTable{p: p, tr: tr, ts: ts, finalAlpha: final}, nil
}

// ddim is diffusers' DDIMScheduler; eta > 0 adds noise each step.
type ddim struct {
	*alphaTable
	eta   float64
	ratio int
}

func newDDIM(p *params, n int, eta float64) (*ddim, error) {
	ts, err := spacedIntTimesteps(p, n)
	if err != nil {
		return nil, err
	}
	at, err := newAlphaTable(p, ts)
	if err != nil {
		return nil, err
	}
	return &ddim{alphaTable: at, eta: eta, ratio: p.numTrain / n}, nil
}

func (s *ddim) Step(i int, out, x []float32, noise Noise) ([]float32, []float32, error) {
	if err := checkStep(i, len(s.ts), out, x); err != nil {
		return nil, nil, err
	}
	t := s.ts[i]
	prevT := t - s.ratio
	a, aPrev := s.alpha(t), s.alpha(prevT)
	x0, eps := s.x0eps(out, x, a)
	s.clip(x0)
	variance := (1 - aPrev) / (1 - a) * (1 - a/aPrev)
	std := s.eta * math.Sqrt(variance)
	dirCoef := math.Sqrt(1 - aPrev - std*std)
	sap := math.Sqrt(aPrev)
	var z []float32
	if s.eta > 0 {
		var err error
		if z, err = drawNoise(noise, len(x)); err != nil {
			return nil, nil, err
		}
	}
	prev := make([]float32, len(x))
	for j := range x {
		v := sap*float64(x0[j]) + dirCoef*float64(eps[j])
		if z != nil {
			v += std * float64(z[j])
		}
		prev[j] = float32(v)
	}
	return prev, x0, nil
}

// ddpm is diffusers' DDPMScheduler (ancestral sampling of the training
// chain on the inference timesteps).
type ddpm struct{ *alphaTable }

func newDDPM(p *params, n int) (*ddpm, error) {
	switch p.varianceType {
	case "fixed_small", "fixed_small_log", "fixed_large":
	default:
		return nil, fmt.Errorf("variance_type %q is not supported", p.varianceType)
	}
	ts, err := spacedIntTimesteps(p, n)
	if err != nil {
		return nil, err
	}
	p2 := *p
	p2.setAlphaToOne = true // DDPM uses ᾱ = 1 before the first timestep
	at, err := newAlphaTable(&p2, ts)
	if err != nil {
		return nil, err
	}
	at.p = p
	return &ddpm{at}, nil
}

func (s *ddpm) Step(i int, out, x []float32, noise Noise) ([]float32, []float32, error) {
	if err := checkStep(i, len(s.ts), out, x); err != nil {
		return nil, nil, err
	}
	t := s.ts[i]
	prevT := -1
	for k, v := range s.ts {
		if v == t {
			if k+1 < len(s.ts) {
				prevT = s.ts[k+1]
			}
			break
		}
	}
	a, aPrev := s.alpha(t), s.alpha(prevT)
	b, bPrev := 1-a, 1-aPrev
	curAlpha := a / aPrev
	curBeta := 1 - curAlpha
	x0, _ := s.x0eps(out, x, a)
	s.clip(x0)
	cx0 := math.Sqrt(aPrev) * curBeta / b
	cx := math.Sqrt(curAlpha) * bPrev / b
	var std float64
	var z []float32
	if t > 0 {
		var err error
		if z, err = drawNoise(noise, len(x)); err != nil {
			return nil, nil, err
		}
		variance := math.Max(bPrev/b*curBeta, 1e-20)
		switch s.p.varianceType {
		case "fixed_small":
			std = math.Sqrt(variance)
		case "fixed_small_log":
			std = math.Exp(0.5 * math.Log(variance))
		case "fixed_large":
			std = math.Sqrt(curBeta)
		}
	}
	prev := make([]float32, len(x))
	for j := range x {
		v := cx0*float64(x0[j]) + cx*float64(x[j])
		if z != nil {
			v += std * float64(z[j])
		}
		prev[j] = float32(v)
	}
	return prev, x0, nil
}

// lcm is diffusers' LCMScheduler (latent consistency models): each step
// predicts the clean latent through the consistency boundary condition and
// re-noises it to the next timestep.
type lcm struct{ *alphaTable }

func newLCM(p *params, n int) (*lcm, error) {
	T := p.numTrain
	orig := p.originalSteps
	k := T / orig
	origin := make([]int, orig) // descending
	for i := 0; i < orig; i++ {
		origin[orig-1-i] = (i+1)*k - 1
	}
	if n > T {
		return nil, fmt.Errorf("%d steps exceed num_train_timesteps %d", n, T)
	}
	if len(origin)/n < 1 {
		return nil, fmt.Errorf("%d steps exceed original_inference_steps %d", n, orig)
	}
	if n > orig {
		return nil, fmt.Errorf("%d steps exceed original_inference_steps %d", n, orig)
	}
	idx := npLinspace(0, float64(len(origin)), n, false)
	ts := make([]int, n)
	for i, v := range idx {
		ts[i] = origin[int(math.Floor(v))]
	}
	at, err := newAlphaTable(p, ts)
	if err != nil {
		return nil, err
	}
	return &lcm{at}, nil
}

func (s *lcm) Step(i int, out, x []float32, noise Noise) ([]float32, []float32, error) {
	if err := checkStep(i, len(s.ts), out, x); err != nil {
		return nil, nil, err
	}
	t := s.ts[i]
	prevT := t
	if i+1 < len(s.ts) {
		prevT = s.ts[i+1]
	}
	a, aPrev := s.alpha(t), s.alpha(prevT)
	const sigmaData = 0.5
	st := float64(t) * s.p.timestepScaling
	cSkip := sigmaData * sigmaData / (st*st + sigmaData*sigmaData)
	cOut := st / math.Sqrt(st*st+sigmaData*sigmaData)
	x0, _ := s.x0eps(out, x, a)
	s.clip(x0)
	denoised := make([]float32, len(x))
	for j := range x {
		denoised[j] = float32(cOut*float64(x0[j]) + cSkip*float64(x[j]))
	}
	if i == len(s.ts)-1 {
		return denoised, denoised, nil
	}
	z, err := drawNoise(noise, len(x))
	if err != nil {
		return nil, nil, err
	}
	sa, sb := math.Sqrt(aPrev), math.Sqrt(1-aPrev)
	prev := make([]float32, len(x))
	for j := range x {
		prev[j] = float32(sa*float64(denoised[j]) + sb*float64(z[j]))
	}
	return prev, denoised, nil
}

// pndm is diffusers' PNDMScheduler: pseudo Runge–Kutta warm-up steps
// (unless skip_prk_steps) followed by the linear multistep PLMS method.
type pndm struct {
	*alphaTable
	prk      []int
	ratio    int
	counter  int
	ets      [][]float32
	curOut   []float64
	curSampl []float32
}

func newPNDM(p *params, n int) (*pndm, error) {
	T := p.numTrain
	if n > T {
		return nil, fmt.Errorf("%d steps exceed num_train_timesteps %d", n, T)
	}
	asc := make([]int, 0, n) // ascending
	switch p.spacing {
	case "linspace":
		for _, v := range npLinspace(0, float64(T-1), n, true) {
			asc = append(asc, int(math.RoundToEven(v)))
		}
	case "leading":
		for i := 0; i < n; i++ {
			asc = append(asc, i*(T/n)+p.stepsOffset)
		}
	case "trailing":
		ar := npArange(float64(T), 0, -float64(T)/float64(n))
		for i := len(ar) - 1; i >= 0; i-- {
			asc = append(asc, int(math.RoundToEven(ar[i]))-1)
		}
	default:
		return nil, fmt.Errorf("timestep_spacing %q is not supported", p.spacing)
	}
	var prk, plms []int
	if p.skipPRK {
		// concatenate(_t[:-1], _t[-2:-1], _t[-1:]): the second-to-last
		// timestep is used twice (the PLMS warm-up step).
		last := len(asc) - 1
		seq := append([]int{}, asc[:last]...)
		if last >= 1 {
			seq = append(seq, asc[last-1])
		}
		seq = append(seq, asc[last])
		for i := len(seq) - 1; i >= 0; i-- {
			plms = append(plms, seq[i])
		}
	} else {
		const order = 4
		if len(asc) < order {
			return nil, fmt.Errorf("PNDM with Runge–Kutta warm-up needs at least %d steps (set skip_prk_steps or use sampler \"pndm\")", order)
		}
		half := T / n / 2
		var rep []int
		for _, t := range asc[len(asc)-order:] {
			rep = append(rep, t, t+half)
		}
		// prk_timesteps[:-1].repeat(2)[1:-1][::-1]
		var dbl []int
		for _, t := range rep[:len(rep)-1] {
			dbl = append(dbl, t, t)
		}
		dbl = dbl[1 : len(dbl)-1]
		for i := len(dbl) - 1; i >= 0; i-- {
			prk = append(prk, dbl[i])
		}
		for i := len(asc) - 4; i >= 0; i-- {
			plms = append(plms, asc[i])
		}
	}
	ts := append(append([]int{}, prk...), plms...)
	for _, t := range ts {
		if t < 0 || t >= T {
			return nil, fmt.Errorf("timestep %d outside 0..%d", t, T-1)
		}
	}
	at, err := newAlphaTable(p, ts)
	if err != nil {
		return nil, err
	}
	return &pndm{alphaTable: at, prk: prk, ratio: T / n}, nil
}

func (s *pndm) Step(i int, out, x []float32, _ Noise) ([]float32, []float32, error) {
	if err := checkStep(i, len(s.ts), out, x); err != nil {
		return nil, nil, err
	}
	t := s.ts[i]
	x0, _ := s.x0eps(out, x, s.alpha(t))
	var prev []float32
	if s.counter < len(s.prk) && !s.p.skipPRK {
		prev = s.stepPRK(out, t, x)
	} else {
		prev = s.stepPLMS(out, t, x)
	}
	return prev, x0, nil
}

func (s *pndm) stepPRK(out []float32, t int, x []float32) []float32 {
	diff := 0
	if s.counter%2 == 0 {
		diff = s.ratio / 2
	}
	prevT := t - diff
	t = s.prk[s.counter/4*4]
	if s.curOut == nil {
		s.curOut = make([]float64, len(out))
	}
	mo := out
	switch s.counter % 4 {
	case 0:
		for j := range out {
			s.curOut[j] += float64(out[j]) / 6
		}
		s.ets = append(s.ets, out)
		s.curSampl = x
	case 1, 2:
		for j := range out {
			s.curOut[j] += float64(out[j]) / 3
		}
	case 3:
		mo = make([]float32, len(out))
		for j := range out {
			mo[j] = float32(s.curOut[j] + float64(out[j])/6)
		}
		s.curOut = nil
	}
	cur := x
	if s.curSampl != nil {
		cur = s.curSampl
	}
	s.counter++
	return s.prevSample(cur, t, prevT, mo)
}

func (s *pndm) stepPLMS(out []float32, t int, x []float32) []float32 {
	prevT := t - s.ratio
	if s.counter != 1 {
		if len(s.ets) > 3 {
			s.ets = s.ets[len(s.ets)-3:]
		}
		s.ets = append(s.ets, out)
	} else {
		prevT = t
		t += s.ratio
	}
	e := s.ets
	n := len(e)
	mo := make([]float32, len(out))
	switch {
	case n == 1 && s.counter == 0:
		copy(mo, out)
		s.curSampl = x
	case n == 1 && s.counter == 1:
		for j := range out {
			mo[j] = float32((float64(out[j]) + float64(e[0][j])) / 2)
		}
		x = s.curSampl
		s.curSampl = nil
	case n == 2:
		for j := range out {
			mo[j] = float32((3*float64(e[1][j]) - float64(e[0][j])) / 2)
		}
	case n == 3:
		for j := range out {
			mo[j] = float32((23*float64(e[2][j]) - 16*float64(e[1][j]) + 5*float64(e[0][j])) / 12)
		}
	default:
		for j := range out {
			mo[j] = float32((55*float64(e[n-1][j]) - 59*float64(e[n-2][j]) + 37*float64(e[n-3][j]) - 9*float64(e[n-4][j])) / 24)
		}
	}
	s.counter++
	return s.prevSample(x, t, prevT, mo)
}

// prevSample is PNDM's transfer from timestep t to prevT (formula (9) of
// Liu et al. 2022).
func (s *pndm) prevSample(x []float32, t, prevT int, out []float32) []float32 {
	a, aPrev := s.alpha(t), s.alpha(prevT)
	b, bPrev := 1-a, 1-aPrev
	eps := out
	if s.p.prediction == "v_prediction" {
		eps = make([]float32, len(out))
		for j := range out {
			eps[j] = float32(math.Sqrt(a)*float64(out[j]) + math.Sqrt(b)*float64(x[j]))
		}
	}
	sc := math.Sqrt(aPrev / a)
	denom := a*math.Sqrt(bPrev) + math.Sqrt(a*b*aPrev)
	prev := make([]float32, len(x))
	for j := range x {
		prev[j] = float32(sc*float64(x[j]) - (aPrev-a)*float64(eps[j])/denom)
	}
	return prev
}
