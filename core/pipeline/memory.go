package pipeline

import (
	"context"
	"fmt"

	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/memory"
)

// SetMemoryRecovery sets what the pipeline does when a denoiser or VAE
// call runs out of device memory. Every such call is first split (rows of
// the denoiser call, images of the decode; halved until they fit, the
// rows already done kept); when one row alone does not fit, rec's steps
// run in order — free the other models, switch this model to sequential
// loading — and the row is retried after each; only then does the call
// fail, with memory.ErrOutOfMemory. A split call gives each row the
// result it has in the whole call (rows are independent), so no job
// fails for memory while anything can still be done. Like the rest of
// the pipeline it must not be called while a job runs.
func (p *Pipeline) SetMemoryRecovery(rec memory.Recovery) { p.rec = rec }

// TakeMemoryReport returns what out-of-memory recovery did since the last
// call (zero when nothing was needed) and starts a new report.
func (p *Pipeline) TakeMemoryReport() memory.Report {
	r := p.report
	p.report = memory.Report{}
	return r
}

// note adds one split call's report to the pipeline's.
func (p *Pipeline) note(r memory.Report) {
	if !r.Recovered() {
		return
	}
	p.report.Add(r)
}

// denoise runs one denoiser call over the rows of group g (their LoRAs
// installed per row), split into smaller calls when the whole one runs
// out of device memory.
func (p *Pipeline) denoise(ctx context.Context, g []*batchState, in family.DenoiseInput) ([]float32, error) {
	rows := in.Shape[0]
	var out []float32
	outPer := 0
	rep, err := memory.Split(ctx, rows, func(ctx context.Context, lo, hi int) error {
		remove, err := p.installUNetRows(g, lo, hi)
		if err != nil {
			return err
		}
		part, err := p.m.Denoise(ctx, sliceRows(in, lo, hi))
		remove()
		if err != nil {
			return err
		}
		if out == nil {
			if len(part)%(hi-lo) != 0 {
				return fmt.Errorf("denoiser returned %d values for %d rows", len(part), hi-lo)
			}
			outPer = len(part) / (hi - lo)
			out = make([]float32, rows*outPer)
		}
		if len(part) != (hi-lo)*outPer {
			return fmt.Errorf("denoiser returned %d values for %d rows of %d", len(part), hi-lo, outPer)
		}
		copy(out[lo*outPer:], part)
		return nil
	}, p.rec)
	p.note(rep)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// sliceRows returns rows [lo, hi) of a denoiser call.
func sliceRows(in family.DenoiseInput, lo, hi int) family.DenoiseInput {
	rows := in.Shape[0]
	if lo == 0 && hi == rows {
		return in
	}
	cut := func(v []float32) []float32 {
		if v == nil {
			return nil
		}
		per := len(v) / rows
		return v[lo*per : hi*per]
	}
	out := in
	out.X, out.Timesteps, out.Context, out.Pooled, out.Extra = cut(in.X), cut(in.Timesteps), cut(in.Context), cut(in.Pooled), cut(in.Extra)
	out.Shape[0] = hi - lo
	return out
}

// decodeSplit decodes latents like decodeLatents, split by images when
// the whole call runs out of device memory (see SetMemoryRecovery).
func (p *Pipeline) decodeSplit(ctx context.Context, z []float32, shape [4]int) ([]float32, [4]int, error) {
	n := shape[0]
	per := len(z) / max(n, 1)
	var img []float32
	var ishape [4]int
	rep, err := memory.Split(ctx, n, func(ctx context.Context, lo, hi int) error {
		s := shape
		s[0] = hi - lo
		part, ps, err := p.decodeLatents(ctx, z[lo*per:hi*per], s)
		if err != nil {
			return err
		}
		if img == nil {
			ishape = ps
			ishape[0] = n
			img = make([]float32, n*ps[1]*ps[2]*ps[3])
		}
		if ps[1] != ishape[1] || ps[2] != ishape[2] || ps[3] != ishape[3] || len(part) != (hi-lo)*ps[1]*ps[2]*ps[3] {
			return fmt.Errorf("decoder returned %v for %d images, want %v", ps, hi-lo, ishape)
		}
		copy(img[lo*ps[1]*ps[2]*ps[3]:], part)
		return nil
	}, p.rec)
	p.note(rep)
	if err != nil {
		return nil, ishape, err
	}
	return img, ishape, nil
}
