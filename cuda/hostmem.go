package cuda

import (
	"unsafe"

	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/cuda/internal/cu"
)

// Pinned host memory and asynchronous copies for weight offload.

func (e *cudaEngine) hostAlloc(n int64) ([]byte, error) {
	if n <= 0 {
		return nil, nil
	}
	p, err := e.drv.MemAllocHost(n)
	if err != nil {
		return nil, err
	}
	return unsafe.Slice((*byte)(p), n), nil
}

func (e *cudaEngine) hostFree(b []byte) {
	if len(b) > 0 {
		_ = e.drv.MemFreeHost(unsafe.Pointer(unsafe.SliceData(b)))
	}
}

func (e *cudaEngine) copyOut(dst []byte, src uint64) error {
	if len(dst) == 0 {
		return nil
	}
	return e.drv.MemcpyDtoHAsync(unsafe.Pointer(unsafe.SliceData(dst)), cu.DevicePtr(src), int64(len(dst)), e.stream)
}

func (e *cudaEngine) copyIn(dst uint64, src []byte) error {
	if len(src) == 0 {
		return nil
	}
	return e.drv.MemcpyHtoDAsync(cu.DevicePtr(dst), unsafe.Pointer(unsafe.SliceData(src)), int64(len(src)), e.stream)
}

// MemView is the memory manager's view of a device (memory.Device).
type MemView struct{ d *Device }

var _ memory.Device = MemView{}

// MemView returns the device's view for the memory manager. MemStats may
// be called from any goroutine; ResetPeak and Trim only from the goroutine
// using the device, between batches.
func (d *Device) MemView() MemView { return MemView{d} }

// MemStats implements memory.Device.
func (v MemView) MemStats() memory.DeviceStats {
	a := v.d.alloc
	used := a.pubInUse.Load()
	return memory.DeviceStats{Total: v.d.info.Memory, Used: used, Reserved: used + a.pubCached.Load(),
		Peak: a.pubPeak.Load(), Weights: v.d.memWeights.Load()}
}

// ResetPeak implements memory.Device.
func (v MemView) ResetPeak() { v.d.ResetPeak() }

// Trim implements memory.Device: the allocator's cached blocks go back to
// the driver (captured graphs keep their arenas), and spare pinned host
// blocks are freed.
func (v MemView) Trim() error {
	return v.d.run(func() error {
		v.d.alloc.trim()
		v.d.dropSpares()
		return nil
	})
}

// MemoryDevice returns the device's view for the memory manager (see
// MemView); servers find it on a backend without importing this package.
func (b *Backend) MemoryDevice() memory.Device { return b.d.MemView() }

// SetMemoryLimit makes the device's allocator refuse, as out of memory,
// allocations that would take the bytes it holds (in use and cached) past
// n (0: no limit), so that a memory budget below the card's memory
// behaves like a smaller card. Weights, activations and graph arenas
// count; the libraries' workspaces do not.
func (b *Backend) SetMemoryLimit(n int64) { b.d.alloc.limit.Store(max(n, 0)) }
