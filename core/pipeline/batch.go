package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/core/sample"
)

// BatchJob is one request of a batch.
type BatchJob struct {
	Request Request
	// Ctx, when not nil, cancels this job alone: once it ends, the job's
	// rows leave the batch before the next model evaluation (the others
	// go on with the same results they would have had) and the job fails
	// with Ctx's error. Cancelling the batch's context stops every job.
	Ctx context.Context
}

// BatchResult is the outcome of one job of a batch: a result or an error.
type BatchResult struct {
	Result *Result
	Err    error
}

// Generate runs one job. onProgress, when not nil, is called after every
// model evaluation. Cancelling ctx stops the job between evaluations.
func (p *Pipeline) Generate(ctx context.Context, req Request, onProgress func(Progress)) (*Result, error) {
	var cb func(int, Progress)
	if onProgress != nil {
		cb = func(_ int, pr Progress) { onProgress(pr) }
	}
	r := p.GenerateBatch(ctx, []BatchJob{{Request: req}}, cb)[0]
	return r.Result, r.Err
}

// GenerateBatch runs several jobs as one batch: each keeps its own
// prompts, seeds, generators, image count and sampler state, and every
// model evaluation runs the images of all jobs that can share it (the
// same latent size and conditioning length; the unconditional and
// conditional halves of every job's guidance included) in one UNet call,
// with a timestep per row. Jobs whose schedules differ in length (img2img
// strengths) join the batch late so that all finish together, and the
// finished latents of one size are decoded in one VAE call. Every image
// comes out as it would from running its job alone (the networks treat
// the images of a batch independently).
//
// onProgress, when not nil, is called after every evaluation of each job
// with the job's index. Results come back in the order of jobs; a job
// that is invalid, canceled (see BatchJob.Ctx) or fails alone does not
// disturb the others. If an evaluation of several jobs fails (out of
// memory, say), the batch goes on one job at a time.
func (p *Pipeline) GenerateBatch(ctx context.Context, jobs []BatchJob, onProgress func(job int, pr Progress)) []BatchResult {
	out := make([]BatchResult, len(jobs))
	if g, ok := p.m.(family.Generator); ok {
		return p.generateOwn(ctx, g, jobs, onProgress)
	}
	var live []*batchState
	for k, bj := range jobs {
		st, err := p.prepare(ctx, k, bj)
		if err == nil {
			err = st.ctx.Err()
		}
		if err != nil {
			out[k].Err = err
			continue
		}
		live = append(live, st)
	}
	b := &batchRun{p: p, ctx: ctx, onProgress: onProgress}
	for len(live) > 0 {
		b.run(live)
		// hires jobs go on to their second pass, as one more batch
		var next []*batchState
		for _, st := range live {
			if st.err == nil && st.hires != nil {
				if st.err = st.ctx.Err(); st.err == nil {
					var ns *batchState
					if ns, st.err = p.secondPass(ctx, st); st.err == nil {
						next = append(next, ns)
						continue
					}
				}
			}
			if st.err != nil {
				out[st.index].Err = st.err
				continue
			}
			out[st.index].Result = st.res
		}
		live = next
	}
	return out
}

// run runs a batch of prepared jobs to the end: every job's evaluations,
// those whose schedules are shorter joining late so that all finish
// together, then the decode.
func (b *batchRun) run(live []*batchState) {
	ctx := b.ctx
	rounds := 0
	for _, st := range live {
		rounds = max(rounds, st.total)
	}
	for _, st := range live {
		st.join = rounds - st.total
	}
	for r := 0; r < rounds; r++ {
		if err := ctx.Err(); err != nil {
			for _, st := range live {
				if st.err == nil {
					st.err = err
				}
			}
			break
		}
		var active []*batchState
		for _, st := range live {
			if st.err != nil || r < st.join {
				continue
			}
			if err := st.ctx.Err(); err != nil {
				st.err = err // canceled: its rows leave the batch
				continue
			}
			active = append(active, st)
		}
		for _, g := range b.groups(active) {
			b.evaluate(g)
		}
	}
	b.decode(live)
}

// batchState is one job of a batch in flight.
type batchState struct {
	*job
	index  int
	ctx    context.Context
	s      sample.Sampler
	name   string
	cond   []float32 // (rows, ctxLen, D), unconditional rows first
	ctxLen int
	pooled []float32 // (rows, P) pooled text outputs in cond's row order, or nil
	extra  []float32 // one image's extra conditioning (the family's), or nil
	uextra []float32 // the same for the unconditional rows
	ts     []float64
	begin  int // first evaluation (img2img skips some)
	total  int // evaluations to run
	join   int // the round the job joins the batch
	i      int // next evaluation
	// hires is a hires request's plan while its first pass runs (nil
	// otherwise); stepBase and stepsAfter count the evaluations of the
	// passes before and after this one, for progress across both.
	hires                *hiresPlan
	stepBase, stepsAfter int
	hiresFrom            [2]int // a hires second pass's first-pass size
	x                    []float32
	res                  *Result
	err                  error
}

// rows is the number of UNet rows the job needs per evaluation.
func (st *batchState) rows() int {
	if st.cfg {
		return 2 * st.n
	}
	return st.n
}

// prepare resolves one job of a batch: its sampler, conditioning and
// initial latents.
func (p *Pipeline) prepare(ctx context.Context, k int, bj BatchJob) (*batchState, error) {
	if _, own := p.m.(family.Generator); own {
		return nil, errors.New("pipeline: this model family runs its own sampling loop: use Generate or GenerateBatch, not a running batch")
	}
	var plan *hiresPlan
	if bj.Request.Hires.On() {
		var err error
		if bj.Request, plan, err = p.planHires(bj.Request); err != nil {
			return nil, err
		}
	}
	j, err := p.resolve(bj.Request)
	if err != nil {
		return nil, err
	}
	st := &batchState{job: j, index: k, ctx: bj.Ctx, hires: plan}
	if st.ctx == nil {
		st.ctx = ctx
	}
	req := j.req
	if st.s, err = sample.New(p.sched, req.Sampler, req.Steps, sample.Options{Eta: req.Eta}); err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	st.name = req.Sampler
	if st.name == "" {
		st.name, _ = p.sched.DefaultSampler()
	}
	if st.cond, st.ctxLen, st.pooled, err = p.conditioning(ctx, j); err != nil {
		return nil, err
	}
	if st.extra, st.uextra, err = p.m.Extra(family.ExtraInput{Width: req.Width, Height: req.Height, Img2Img: j.img2img || req.InitLatents != nil, Micro: req.Micro}); err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	st.ts = st.s.Timesteps()
	if req.InitLatents != nil {
		if st.begin, err = handoffStart(st.ts, req.DenoisingStart, p.sched.TrainTimesteps(), st.s.Order()); err != nil {
			return nil, err
		}
		st.x = append([]float32(nil), req.InitLatents...)
	} else if j.img2img {
		initSteps := min(int(float64(req.Steps)*req.Strength), req.Steps)
		if initSteps < 1 {
			return nil, fmt.Errorf("pipeline: strength %v leaves no step of %d to run", req.Strength, req.Steps)
		}
		st.begin = (req.Steps - initSteps) * st.s.Order()
		if st.begin >= len(st.ts) {
			return nil, fmt.Errorf("pipeline: strength %v leaves no step to run", req.Strength)
		}
		var x0 []float32
		if h := req.hires; h != nil && h.latents != nil {
			if len(h.latents) != j.n*j.per {
				return nil, fmt.Errorf("pipeline: hires latents hold %d values, want %d", len(h.latents), j.n*j.per)
			}
			x0 = h.latents
		} else if h != nil {
			if x0, err = p.encodeHires(ctx, j); err != nil {
				return nil, err
			}
		} else if j.edit != nil && !j.edit.needsInitLatents(req.Strength) {
			x0 = make([]float32, j.n*j.per) // never read: the job starts from pure noise
		} else if x0, err = p.encodeInit(ctx, j); err != nil {
			return nil, err
		}
		noise := req.Noise
		if noise == nil {
			noise = j.initialNoise()
		}
		st.x = st.s.AddNoise(x0, noise, st.begin)
		if j.edit != nil {
			if err := j.edit.start(st, x0, noise); err != nil {
				return nil, err
			}
		}
	} else {
		noise := req.Noise
		if noise == nil {
			noise = j.initialNoise()
		}
		sigma := float32(st.s.InitNoiseSigma())
		st.x = make([]float32, len(noise))
		for i, v := range noise {
			st.x[i] = v * sigma
		}
	}
	st.i = st.begin
	st.total = len(st.ts) - st.begin
	if plan != nil {
		st.stepsAfter = plan.second
	}
	if req.DenoisingEnd != 0 {
		end := cutoffCount(st.ts, req.DenoisingEnd, p.sched.TrainTimesteps())
		if end <= st.begin {
			return nil, fmt.Errorf("pipeline: denoising_end %v leaves no step to run", req.DenoisingEnd)
		}
		st.total = end - st.begin
	}
	return st, nil
}

// batchRun is the state one GenerateBatch call shares between rounds.
type batchRun struct {
	p          *Pipeline
	ctx        context.Context
	onProgress func(int, Progress)
	evals      int
	solo       bool // a batched evaluation failed: one job at a time from now on
	// pad, when set, gives the row count each UNet call runs (≥ the rows
	// needed; extra rows repeat the last one and are dropped).
	pad func(rows int) int
}

// groups splits the jobs of a round into those that can share one UNet
// call: the same latent size and conditioning length, in job order. Jobs
// with a DoRA LoRA (applied by merging, see mergeUNet) share a call only
// with jobs using the same LoRA set.
func (b *batchRun) groups(active []*batchState) [][]*batchState {
	var out [][]*batchState
	if b.solo {
		for _, st := range active {
			out = append(out, []*batchState{st})
		}
		return out
	}
	type key struct {
		h, w, l int
		merged  string
	}
	at := map[key]int{}
	for _, st := range active {
		k := key{st.h, st.w, st.ctxLen, mergeKey(st.req.LoRAs)}
		i, ok := at[k]
		if !ok {
			i = len(out)
			at[k] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], st)
	}
	return out
}

// evaluate runs one model evaluation for a group of jobs and steps each
// job's sampler. If the shared call fails while the batch goes on, the
// jobs are evaluated again one at a time.
func (b *batchRun) evaluate(g []*batchState) {
	b.evals++
	eval := b.evals
	start := time.Now()
	outs, err := b.predict(g)
	if err != nil {
		// A call that ran out of memory was split down to single rows
		// already: running its jobs alone cannot help.
		if len(g) > 1 && b.ctx.Err() == nil && !errors.Is(err, memory.ErrOutOfMemory) {
			b.solo = true
			for _, st := range g {
				b.evaluate([]*batchState{st})
			}
			return
		}
		for _, st := range g {
			st.err = err
		}
		return
	}
	images := 0
	x0s := make([][]float32, len(g))
	for k, st := range g {
		images += st.n
		drawStep := func() []float32 { return st.draw(st.per) }
		next, x0, err := st.s.Step(st.i, outs[k], st.x, drawStep)
		if err != nil {
			st.err = fmt.Errorf("pipeline: step %d: %w", st.i, err)
			continue
		}
		st.x, x0s[k] = next, x0
		st.i++
		if st.edit != nil {
			st.edit.blend(st)
		}
	}
	took := time.Since(start)
	if b.onProgress == nil {
		return
	}
	for k, st := range g {
		if st.err != nil {
			continue
		}
		pr := Progress{Step: st.stepBase + st.i - st.begin, Steps: st.stepBase + st.total + st.stepsAfter, Timestep: st.ts[st.i-1], Latents: st.x,
			Eval: eval, Batch: images, StepTime: took}
		if m := b.p.def.LatentRGB; m != nil {
			pr.Preview = preview(x0s[k], [4]int{st.n, st.c, st.h, st.w}, *m)
		}
		b.onProgress(st.index, pr)
	}
}

// predict runs the denoiser once over every image of a group — for each job
// its unconditional rows then its conditional rows when guidance is on —
// and returns each job's guided model output.
func (b *batchRun) predict(g []*batchState) ([][]float32, error) {
	p := b.p
	head := g[0]
	rows := 0
	for _, st := range g {
		rows += st.rows()
	}
	d := p.def.ContextDim
	in := make([]float32, 0, rows*head.per)
	ts := make([]float32, 0, rows)
	cond := make([]float32, 0, rows*head.ctxLen*d)
	var pooled, extra []float32
	for _, st := range g {
		x := st.s.ScaleModelInput(st.x, st.i)
		if st.edit != nil {
			x = st.edit.input(x)
		}
		in = append(in, x...)
		if st.cfg {
			in = append(in, x...)
		}
		t := float32(st.ts[st.i])
		for r := 0; r < st.rows(); r++ {
			ts = append(ts, t)
		}
		cond = append(cond, st.cond...)
		pooled = append(pooled, st.pooled...)
		for r := 0; r < st.rows(); r++ {
			if st.cfg && r < st.n { // unconditional rows come first
				extra = append(extra, st.uextra...)
			} else {
				extra = append(extra, st.extra...)
			}
		}
	}
	if b.pad != nil {
		want := b.pad(rows)
		in, ts, cond = padRows(want, rows, in, ts, cond)
		pooled, extra = repeatLastRow(pooled, rows, want), repeatLastRow(extra, rows, want)
		rows = len(ts)
	}
	out, err := p.denoise(b.ctx, g, family.DenoiseInput{X: in, Shape: [4]int{rows, p.denoiserChannels(), head.h, head.w}, Timesteps: ts,
		Context: cond, ContextLen: head.ctxLen, Pooled: pooled, Extra: extra})
	if err != nil {
		return nil, fmt.Errorf("pipeline: unet: %w", err)
	}
	res := make([][]float32, len(g))
	off := 0
	for k, st := range g {
		m := st.n * st.per
		if !st.cfg {
			res[k] = append([]float32(nil), out[off:off+m]...)
			off += m
			continue
		}
		uncond, text := out[off:off+m], out[off+m:off+2*m]
		off += 2 * m
		gs := float32(st.req.Guidance)
		guided := make([]float32, m)
		for i := range guided {
			guided[i] = uncond[i] + float32(gs*float32(text[i]-uncond[i]))
		}
		if phi := st.req.GuidanceRescale; phi > 0 {
			rescale(guided, text, st.n, phi)
		}
		res[k] = guided
	}
	return res, nil
}

// decode finishes the surviving jobs: their results, and their latents
// decoded one VAE call per image size (one job at a time if a shared call
// fails).
func (b *batchRun) decode(live []*batchState) {
	type key struct{ h, w int }
	at := map[key]int{}
	var groups [][]*batchState
	for _, st := range live {
		if st.err != nil {
			continue
		}
		st.res = &Result{Latents: st.x, LatentShape: [4]int{st.n, st.c, st.h, st.w}, Seeds: st.seeds, Subseeds: st.subseeds, Sampler: st.name, Warnings: st.warnings,
			HiresFrom: st.hiresFrom}
		if st.req.SkipDecode {
			continue
		}
		if err := b.ctx.Err(); err != nil {
			st.err = err
			continue
		}
		if err := st.ctx.Err(); err != nil {
			st.err = err
			continue
		}
		k := key{st.h, st.w}
		i, ok := at[k]
		if !ok || b.solo {
			i = len(groups)
			at[k] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], st)
	}
	for _, g := range groups {
		if err := b.decodeGroup(g); err != nil {
			if len(g) > 1 && b.ctx.Err() == nil {
				for _, st := range g {
					if err := b.decodeGroup([]*batchState{st}); err != nil {
						st.err = err
					}
				}
				continue
			}
			for _, st := range g {
				st.err = err
			}
		}
	}
}

// decodeGroup decodes the latents of jobs of one size in one VAE call.
func (b *batchRun) decodeGroup(g []*batchState) error {
	p := b.p
	n := 0
	for _, st := range g {
		n += st.n
	}
	head := g[0]
	shape := [4]int{n, head.c, head.h, head.w}
	z := make([]float32, 0, n*head.per)
	for _, st := range g {
		z = append(z, st.x...)
	}
	if err := p.m.FromDenoiser(z, shape); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	img, ishape, err := p.decodeSplit(b.ctx, z, shape)
	if err != nil {
		return fmt.Errorf("pipeline: vae decode: %w", err)
	}
	if ishape[1] != 3 {
		return fmt.Errorf("pipeline: vae decoded %d channels, want 3", ishape[1])
	}
	for i, v := range img {
		img[i] = min(max(v/2+0.5, 0), 1)
	}
	per := 3 * ishape[2] * ishape[3]
	off := 0
	for _, st := range g {
		res := st.res
		res.Pixels = img[off : off+st.n*per : off+st.n*per]
		res.PixelShape = [4]int{st.n, 3, ishape[2], ishape[3]}
		if st.edit != nil {
			st.edit.paste(res)
		}
		res.Images = PixelsToImages(res.Pixels, res.PixelShape)
		off += st.n * per
	}
	return nil
}

// repeatLastRow pads a (rows, …) batch to want rows with copies of its
// last row (as padRows pads the latents); nil stays nil.
func repeatLastRow(x []float32, rows, want int) []float32 {
	if len(x) == 0 || want <= rows || rows == 0 {
		return x
	}
	per := len(x) / rows
	last := x[len(x)-per:]
	for k := rows; k < want; k++ {
		x = append(x, last...)
	}
	return x
}
