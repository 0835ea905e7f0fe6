package imagedecode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"sync"
)

// Limits bound one image; zero fields are not checked.
type Limits struct {
	// MaxPixels bounds Width × Height.
	MaxPixels int64
	// MaxSide bounds Width and Height.
	MaxSide int
	// MaxBytes bounds DecodedBytes.
	MaxBytes int64
}

// LimitError reports an image over a limit, from its header alone.
type LimitError struct {
	Info Info
	// Limit names the limit: "max_pixels", "max_side" or "max_bytes".
	Limit string
	Value int64
}

func (e *LimitError) Error() string {
	i := e.Info
	return fmt.Sprintf("imagedecode: %s %d×%d, %d channel(s) of %d bits (%d bytes decoded) is over %s=%d",
		i.Format, i.Width, i.Height, i.Channels, i.BitDepth, i.DecodedBytes(), e.Limit, e.Value)
}

// Check reports the first limit the image is over.
func (l Limits) Check(i Info) error {
	switch {
	case l.MaxSide > 0 && (i.Width > l.MaxSide || i.Height > l.MaxSide):
		return &LimitError{Info: i, Limit: "max_side", Value: int64(l.MaxSide)}
	case l.MaxPixels > 0 && i.Pixels() > l.MaxPixels:
		return &LimitError{Info: i, Limit: "max_pixels", Value: l.MaxPixels}
	case l.MaxBytes > 0 && i.DecodedBytes() > l.MaxBytes:
		return &LimitError{Info: i, Limit: "max_bytes", Value: l.MaxBytes}
	}
	return nil
}

// ErrBusy reports that the decode budget stayed full until ctx ended.
var ErrBusy = errors.New("imagedecode: decode budget exhausted")

// Budget bounds the memory of decodes in flight across a server. Waiters
// are served in arrival order; one that asks for more than the whole
// budget fails at once.
type Budget struct {
	mu      sync.Mutex
	total   int64
	used    int64
	waiters []*waiter
}

type waiter struct {
	n     int64
	ready chan struct{}
}

// NewBudget returns a budget of total bytes.
func NewBudget(total int64) *Budget { return &Budget{total: total} }

// InUse returns the bytes held now.
func (b *Budget) InUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Acquire holds n bytes until release is called, waiting while the budget
// is full; it returns ErrBusy (wrapped) when ctx ends first.
func (b *Budget) Acquire(ctx context.Context, n int64) (release func(), err error) {
	if n > b.total {
		return nil, fmt.Errorf("%w: %d bytes exceed the whole budget of %d", ErrBusy, n, b.total)
	}
	b.mu.Lock()
	if len(b.waiters) == 0 && b.used+n <= b.total {
		b.used += n
		b.mu.Unlock()
		return b.releaser(n), nil
	}
	w := &waiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return b.releaser(n), nil
	case <-ctx.Done():
		b.mu.Lock()
		defer b.mu.Unlock()
		select {
		case <-w.ready: // granted while giving up: hand it back
			b.used -= n
			b.wake()
		default:
			for i, x := range b.waiters {
				if x == w {
					b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
					break
				}
			}
			b.wake() // the next waiter may fit now that this one left
		}
		return nil, fmt.Errorf("%w: %v", ErrBusy, ctx.Err())
	}
}

func (b *Budget) releaser(n int64) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.used -= n
			b.wake()
			b.mu.Unlock()
		})
	}
}

// wake grants waiters in order while they fit; b.mu is held.
func (b *Budget) wake() {
	for len(b.waiters) > 0 && b.used+b.waiters[0].n <= b.total {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.used += w.n
		close(w.ready)
	}
}

// Decode checks the header against lim, holds the decode's memory in
// budget (nil: none) and decodes the image. Errors are ErrFormat, a
// *LimitError, ErrBusy or the decoder's error, all wrapped.
func Decode(ctx context.Context, data []byte, lim Limits, budget *Budget) (image.Image, Info, error) {
	info, err := Header(data)
	if err != nil {
		return nil, info, err
	}
	if err := lim.Check(info); err != nil {
		return nil, info, err
	}
	if budget != nil {
		release, err := budget.Acquire(ctx, info.DecodedBytes())
		if err != nil {
			return nil, info, err
		}
		defer release()
	}
	var img image.Image
	switch info.Format {
	case "png":
		img, err = png.Decode(bytes.NewReader(data))
	default:
		img, err = jpeg.Decode(bytes.NewReader(data))
	}
	if err != nil {
		return nil, info, fmt.Errorf("imagedecode: %s: %w", info.Format, err)
	}
	if b := img.Bounds(); b.Dx() != info.Width || b.Dy() != info.Height {
		return nil, info, fmt.Errorf("imagedecode: decoded %d×%d, header says %d×%d", b.Dx(), b.Dy(), info.Width, info.Height)
	}
	return img, info, nil
}
