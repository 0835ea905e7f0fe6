package memory

import (
	"context"
	"errors"
	"fmt"

	"github.com/kiln-project/kiln/core/backend"
)

// Recovery is what Split may do, in order, when a batch runs out of
// device memory: split it (always), then free other models, then switch
// to sequential loading. Nil steps are skipped.
type Recovery struct {
	// FreeOthers moves the other models off the device (offload to host
	// memory or drop).
	FreeOthers func(ctx context.Context) error
	// Sequential switches the model to sequential loading (one component
	// on the device at a time).
	Sequential func(ctx context.Context) error
	// IsOOM reports an out-of-memory failure (nil: errors.Is with
	// backend.ErrOutOfMemory).
	IsOOM func(error) bool
}

// Report says what Split did; the worker puts it in the job record.
type Report struct {
	// Attempts counts runs, failed ones included.
	Attempts int `json:"attempts"`
	// Splits counts halvings of the batch.
	Splits int `json:"splits,omitempty"`
	// Chunk is the batch size that finally ran (the full size when no
	// split was needed).
	Chunk int `json:"chunk"`
	// FreedOthers reports that other models were moved off the device.
	FreedOthers bool `json:"freed_others,omitempty"`
	// Sequential reports that sequential loading was used.
	Sequential bool `json:"sequential,omitempty"`
}

// Add adds o to r: the attempts and splits summed, the smallest chunk,
// either's steps.
func (r *Report) Add(o Report) {
	r.Attempts += o.Attempts
	r.Splits += o.Splits
	if r.Chunk == 0 || (o.Chunk > 0 && o.Chunk < r.Chunk) {
		r.Chunk = o.Chunk
	}
	r.FreedOthers = r.FreedOthers || o.FreedOthers
	r.Sequential = r.Sequential || o.Sequential
}

// Recovered reports whether any recovery step was needed.
func (r Report) Recovered() bool { return r.Splits > 0 || r.FreedOthers || r.Sequential }

// ErrOutOfMemory is the final failure: even one item did not fit after
// every recovery step. It wraps backend.ErrOutOfMemory.
var ErrOutOfMemory = fmt.Errorf("memory: out of device memory after splitting the batch, freeing other models and sequential loading: %w", backend.ErrOutOfMemory)

// Split runs items [0, n) through run in as few chunks as fit: on an
// out-of-memory failure the failed chunk is halved and retried (and later
// chunks use the smaller size); when one item alone does not fit, the
// recovery steps run in order and the item is retried after each. Items
// already run are never run again. Any other error stops at once. run
// must leave the device as it found it when it fails.
func Split(ctx context.Context, n int, run func(ctx context.Context, lo, hi int) error, rec Recovery) (Report, error) {
	isOOM := rec.IsOOM
	if isOOM == nil {
		isOOM = func(err error) bool { return errors.Is(err, backend.ErrOutOfMemory) }
	}
	rep := Report{Chunk: n}
	if n <= 0 {
		return rep, nil
	}
	chunk := n
	for lo := 0; lo < n; {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		hi := min(n, lo+chunk)
		rep.Attempts++
		err := run(ctx, lo, hi)
		if err == nil {
			lo = hi
			continue
		}
		if !isOOM(err) {
			return rep, err
		}
		if hi-lo > 1 {
			chunk = (hi - lo + 1) / 2
			rep.Chunk = chunk
			rep.Splits++
			continue
		}
		switch {
		case !rep.FreedOthers && rec.FreeOthers != nil:
			rep.FreedOthers = true
			if ferr := rec.FreeOthers(ctx); ferr != nil {
				return rep, fmt.Errorf("memory: freeing other models after %v: %w", err, ferr)
			}
		case !rep.Sequential && rec.Sequential != nil:
			rep.Sequential = true
			if serr := rec.Sequential(ctx); serr != nil {
				return rep, fmt.Errorf("memory: sequential loading after %v: %w", err, serr)
			}
		default:
			return rep, fmt.Errorf("%w (last: %v)", ErrOutOfMemory, err)
		}
	}
	return rep, nil
}
