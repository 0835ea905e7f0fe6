package cuda

import (
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"sync/atomic"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/cuda/internal/cu"
)

// allocator is a caching device allocator: blocks come in size classes
// (eight per power of two) and return to a free list instead of the driver,
// so that steady-state work never calls cuMemAlloc. All work runs on one
// stream, so a block freed by earlier work may be handed to later work at
// once: the stream orders the two. It is used from the recording goroutine
// only.
type allocator struct {
	eng    engine
	free   map[int64][]uint64 // size class → cached blocks
	cached int64              // bytes in free lists
	inUse  int64              // bytes handed out (activations, arenas, weights)
	peak   int64              // high-water mark of inUse since resetPeak
	gcHook func()             // called once before giving up on an allocation
	limit  atomic.Int64       // most bytes held (in use and cached); 0: none

	// Copies of inUse, cached and peak that any goroutine may read.
	pubInUse, pubCached, pubPeak atomic.Int64
}

// publish copies the counters for readers on other goroutines.
func (a *allocator) publish() {
	a.pubInUse.Store(a.inUse)
	a.pubCached.Store(a.cached)
	a.pubPeak.Store(a.peak)
}

func newAllocator(eng engine) *allocator {
	return &allocator{eng: eng, free: make(map[int64][]uint64)}
}

// sizeClass rounds n up to one of eight steps per power of two (at least 512 bytes).
func sizeClass(n int64) int64 {
	if n <= 512 {
		return 512
	}
	p := 63 - bits.LeadingZeros64(uint64(n-1)) // 2^p < n ≤ 2^(p+1)
	step := int64(1) << (p - 2)                // eight steps between 2^p and 2^(p+1)
	if step < 512 {
		step = 512
	}
	return (n + step - 1) / step * step
}

// alloc returns a block of at least n bytes and its size class.
func (a *allocator) alloc(n int64) (uint64, int64, error) {
	c := sizeClass(n)
	if l := a.free[c]; len(l) > 0 {
		p := l[len(l)-1]
		a.free[c] = l[:len(l)-1]
		a.cached -= c
		a.use(c)
		a.publish()
		return p, c, nil
	}
	p, err := a.driverAlloc(c)
	if err != nil && errors.Is(err, cu.ErrOutOfMemory) {
		// Give back what the cache holds, let the GC return forgotten
		// tensors, and try once more.
		a.trim()
		if a.gcHook != nil {
			a.gcHook()
			a.trim()
		}
		p, err = a.driverAlloc(c)
	}
	if err != nil {
		if errors.Is(err, cu.ErrOutOfMemory) {
			return 0, 0, fmt.Errorf("allocating %d MiB: %w", c>>20, backend.ErrOutOfMemory)
		}
		return 0, 0, err
	}
	a.use(c)
	a.publish()
	return p, c, nil
}

// driverAlloc takes a new block of class c from the driver, within the
// limit: cached blocks go back first when they stand in the way, and past
// the limit the answer is the driver's out of memory.
func (a *allocator) driverAlloc(c int64) (uint64, error) {
	if lim := a.limit.Load(); lim > 0 {
		if a.inUse+a.cached+c > lim {
			a.trim()
		}
		if a.inUse+c > lim {
			return 0, fmt.Errorf("%d MiB past the %d MiB limit: %w", c>>20, lim>>20, cu.ErrOutOfMemory)
		}
	}
	return a.eng.alloc(c)
}

func (a *allocator) use(c int64) {
	a.inUse += c
	if a.inUse > a.peak {
		a.peak = a.inUse
	}
}

// release returns a block of size class c to the cache.
func (a *allocator) release(p uint64, c int64) {
	a.inUse -= c
	a.free[c] = append(a.free[c], p)
	a.cached += c
	a.publish()
}

// trim frees every cached block back to the driver.
func (a *allocator) trim() {
	classes := make([]int64, 0, len(a.free))
	for c := range a.free {
		classes = append(classes, c)
	}
	sort.Slice(classes, func(i, j int) bool { return classes[i] > classes[j] })
	for _, c := range classes {
		for _, p := range a.free[c] {
			a.eng.free(p)
		}
		a.cached -= c * int64(len(a.free[c]))
		delete(a.free, c)
	}
	a.publish()
}
