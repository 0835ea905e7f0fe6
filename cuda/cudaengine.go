package cuda

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/kiln-project/kiln/cuda/internal/cu"
	"github.com/kiln-project/kiln/cuda/internal/cublas"
	"github.com/kiln-project/kiln/cuda/internal/cudnn"
	"github.com/kiln-project/kiln/cuda/internal/kernels"
)

// Process-wide library handles: dlopen is process-global, so each library is
// opened once and never changes afterwards.
var (
	loadDriver = sync.OnceValues(cu.Load)
	loadCuBLAS = sync.OnceValues(cublas.Load)
	loadCuDNN  = sync.OnceValues(cudnn.Load)
)

// cudnnWorkspace is the fixed cuDNN workspace of a device; algorithms that
// need more are not used. Fixed, because captured graphs keep its address.
const cudnnWorkspace = 256 << 20

const (
	stageBytes   = 32 << 20 // each of two pinned staging buffers
	paramBytes   = 4096     // pinned kernel-parameter block
	maxParams    = 64
	workspaceLen = 32 << 20 // cuBLAS workspace
)

type kfunc struct {
	fn    cu.Function
	shmem uint32 // dynamic shared memory the function is allowed
}

// cudaEngine drives one device through the driver API and cuBLAS. Every
// method runs on the device's locked worker thread, where the primary
// context is current.
type cudaEngine struct {
	drv    *cu.Driver
	blas   *cublas.Lib
	dev    cu.Device
	stream cu.Stream
	mod    cu.Module
	mod90  cu.Module // the Hopper image (kernels/sm90a), 0 where not loaded
	funcs  map[string]*kfunc
	h      cublas.Handle
	ws     cu.DevicePtr

	params  unsafe.Pointer // pinned: pointer array, then 8-byte value slots
	stage   [2]unsafe.Pointer
	stageEv [2]cu.Event
	next    int

	graphs map[graphHandle]cu.Graph

	dnn      *cudnn.Lib // nil: no cuDNN
	dnnErr   error
	dnnH     cudnn.Handle
	dnnWS    cu.DevicePtr
	dnnConvs map[cudnn.ConvShape]*cudnn.Conv

	lt      *cublas.Lt // nil: not opened (yet)
	ltErr   error
	ltH     cublas.LtHandle
	ltPlans map[cublas.LtShape]*cublas.LtPlan
}

// newCUDAEngine sets up device ordinal on the calling (locked) thread.
func newCUDAEngine(drv *cu.Driver, blas *cublas.Lib, ordinal int) (e *cudaEngine, err error) {
	e = &cudaEngine{drv: drv, blas: blas, funcs: make(map[string]*kfunc), graphs: make(map[graphHandle]cu.Graph)}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.dev, err = drv.DeviceGet(ordinal); err != nil {
		return nil, err
	}
	ctx, err := drv.PrimaryCtxRetain(e.dev)
	if err != nil {
		return nil, err
	}
	if err = drv.CtxSetCurrent(ctx); err != nil {
		return nil, err
	}
	if e.stream, err = drv.StreamCreate(1); err != nil {
		return nil, err
	}
	if e.mod, err = drv.ModuleLoadData(kernels.Image()); err != nil {
		return nil, fmt.Errorf("loading Kiln's kernel image: %w", err)
	}
	if e.h, err = blas.Create(); err != nil {
		return nil, err
	}
	if err = blas.SetStream(e.h, e.stream); err != nil {
		return nil, err
	}
	if e.ws, err = drv.MemAlloc(workspaceLen); err != nil {
		return nil, err
	}
	if err = blas.SetWorkspace(e.h, e.ws, workspaceLen); err != nil {
		return nil, err
	}
	if e.params, err = drv.MemAllocHost(paramBytes); err != nil {
		return nil, err
	}
	for i := range e.stage {
		if e.stage[i], err = drv.MemAllocHost(stageBytes); err != nil {
			return nil, err
		}
		if e.stageEv[i], err = drv.EventCreate(2); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func (e *cudaEngine) close() {
	for _, p := range e.ltPlans {
		p.Close()
	}
	if e.ltH != 0 {
		e.lt.Destroy(e.ltH)
	}
	for _, c := range e.dnnConvs {
		c.Close()
	}
	if e.dnnH != 0 {
		e.dnn.Destroy(e.dnnH)
	}
	if e.dnnWS != 0 {
		_ = e.drv.MemFree(e.dnnWS)
	}
	for h, g := range e.graphs {
		_ = e.drv.GraphExecDestroy(cu.GraphExec(h))
		_ = e.drv.GraphDestroy(g)
	}
	e.graphs = nil
	if e.h != 0 {
		_ = e.blas.Destroy(e.h)
	}
	if e.ws != 0 {
		_ = e.drv.MemFree(e.ws)
	}
	if e.params != nil {
		_ = e.drv.MemFreeHost(e.params)
	}
	for i := range e.stage {
		if e.stage[i] != nil {
			_ = e.drv.MemFreeHost(e.stage[i])
		}
		if e.stageEv[i] != 0 {
			_ = e.drv.EventDestroy(e.stageEv[i])
		}
	}
	if e.mod != 0 {
		_ = e.drv.ModuleUnload(e.mod)
	}
	if e.mod90 != 0 {
		_ = e.drv.ModuleUnload(e.mod90)
	}
	if e.stream != 0 {
		_ = e.drv.StreamDestroy(e.stream)
	}
	_ = e.drv.PrimaryCtxRelease(e.dev)
}

func (e *cudaEngine) alloc(n int64) (uint64, error) {
	p, err := e.drv.MemAlloc(n)
	return uint64(p), err
}

func (e *cudaEngine) free(p uint64) { _ = e.drv.MemFree(cu.DevicePtr(p)) }

// upload copies through the two pinned staging buffers in turn, so that
// filling one overlaps the transfer from the other.
func (e *cudaEngine) upload(dst uint64, src []byte) error {
	for off := 0; off < len(src); off += stageBytes {
		n := min(stageBytes, len(src)-off)
		i := e.next
		e.next ^= 1
		if err := e.drv.EventSynchronize(e.stageEv[i]); err != nil {
			return err
		}
		copy(unsafe.Slice((*byte)(e.stage[i]), n), src[off:off+n])
		if err := e.drv.MemcpyHtoDAsync(cu.DevicePtr(dst+uint64(off)), e.stage[i], int64(n), e.stream); err != nil {
			return err
		}
		if err := e.drv.EventRecord(e.stageEv[i], e.stream); err != nil {
			return err
		}
	}
	return nil
}

func (e *cudaEngine) download(dst []byte, src uint64) error {
	if len(dst) == 0 {
		return e.sync()
	}
	for off := 0; off < len(dst); off += stageBytes {
		n := min(stageBytes, len(dst)-off)
		if err := e.drv.MemcpyDtoHAsync(e.stage[0], cu.DevicePtr(src+uint64(off)), int64(n), e.stream); err != nil {
			return err
		}
		if err := e.drv.StreamSynchronize(e.stream); err != nil {
			return err
		}
		copy(dst[off:off+n], unsafe.Slice((*byte)(e.stage[0]), n))
	}
	return nil
}

func (e *cudaEngine) memset(dst uint64, n int64, v byte) error {
	return e.drv.MemsetD8Async(cu.DevicePtr(dst), v, n, e.stream)
}

// loadSM90A loads the Hopper image next to the portable one; its kernels
// are then found by name like the others.
func (e *cudaEngine) loadSM90A(img []byte) error {
	m, err := e.drv.ModuleLoadData(img)
	if err != nil {
		return fmt.Errorf("loading the Hopper kernel image: %w", err)
	}
	e.mod90 = m
	return nil
}

func (e *cudaEngine) hasKernel(name string) bool {
	_, err := e.function(name, 0)
	return err == nil
}

func (e *cudaEngine) function(name string, shmem uint32) (*kfunc, error) {
	f, ok := e.funcs[name]
	if !ok {
		fn, err := e.drv.ModuleGetFunction(e.mod, name)
		if err != nil && e.mod90 != 0 {
			fn, err = e.drv.ModuleGetFunction(e.mod90, name)
		}
		if err != nil {
			return nil, err
		}
		f = &kfunc{fn: fn, shmem: 48 << 10}
		e.funcs[name] = f
	}
	if shmem > f.shmem {
		if err := e.drv.FuncSetAttribute(f.fn, cu.FuncAttrMaxDynamicSharedBytes, int(shmem)); err != nil {
			return nil, fmt.Errorf("%s: %d bytes of shared memory: %w", name, shmem, err)
		}
		f.shmem = shmem
	}
	return f, nil
}

func (e *cudaEngine) launch(kernel string, cfg launchCfg, args []karg) error {
	f, err := e.function(kernel, cfg.shmem)
	if err != nil {
		return err
	}
	if len(args) > maxParams {
		return fmt.Errorf("%s: %d parameters", kernel, len(args))
	}
	ptrs := unsafe.Slice((*unsafe.Pointer)(e.params), maxParams)
	vals := unsafe.Slice((*uint64)(unsafe.Add(e.params, 8*maxParams)), maxParams)
	for i, a := range args {
		vals[i] = a.v
		ptrs[i] = unsafe.Pointer(&vals[i])
	}
	if err := e.drv.LaunchKernel(f.fn, cfg.grid, cfg.block, cfg.shmem, e.stream, e.params); err != nil {
		return fmt.Errorf("%s: %w", kernel, err)
	}
	return nil
}

func (e *cudaEngine) gemm(g *cublas.Gemm) error { return e.blas.Run(e.h, g) }

func (e *cudaEngine) beginCapture() error {
	return e.drv.StreamBeginCapture(e.stream, cu.CaptureModeThreadLocal)
}

func (e *cudaEngine) endCapture() (graphHandle, int, error) {
	g, err := e.drv.StreamEndCapture(e.stream)
	if err != nil {
		return 0, 0, err
	}
	nodes, _ := e.drv.GraphNodeCount(g)
	x, err := e.drv.GraphInstantiate(g)
	if err != nil {
		_ = e.drv.GraphDestroy(g)
		return 0, 0, err
	}
	e.graphs[graphHandle(x)] = g
	return graphHandle(x), nodes, nil
}

func (e *cudaEngine) launchGraph(g graphHandle) error {
	return e.drv.GraphLaunch(cu.GraphExec(g), e.stream)
}

func (e *cudaEngine) destroyGraph(h graphHandle) {
	if g, ok := e.graphs[h]; ok {
		_ = e.drv.GraphExecDestroy(cu.GraphExec(h))
		_ = e.drv.GraphDestroy(g)
		delete(e.graphs, h)
	}
}

func (e *cudaEngine) sync() error { return e.drv.StreamSynchronize(e.stream) }

func (e *cudaEngine) memInfo() (int64, int64, error) { return e.drv.MemGetInfo() }

func (e *cudaEngine) newEvent() (eventHandle, error) {
	ev, err := e.drv.EventCreate(0)
	return eventHandle(ev), err
}

func (e *cudaEngine) record(ev eventHandle) error {
	return e.drv.EventRecord(cu.Event(ev), e.stream)
}

func (e *cudaEngine) elapsed(a, b eventHandle) (float32, error) {
	return e.drv.EventElapsed(cu.Event(a), cu.Event(b))
}

// initCuDNN opens cuDNN on first use; without it hasCuDNN is false.
func (e *cudaEngine) initCuDNN() bool {
	if e.dnn != nil || e.dnnErr != nil {
		return e.dnn != nil
	}
	lib, err := loadCuDNN()
	if err == nil {
		e.dnnH, err = lib.Create(e.stream)
	}
	if err == nil {
		e.dnnWS, err = e.drv.MemAlloc(cudnnWorkspace)
	}
	if err != nil {
		if e.dnnH != 0 {
			lib.Destroy(e.dnnH)
			e.dnnH = 0
		}
		e.dnnErr = err
		return false
	}
	e.dnn = lib
	e.dnnConvs = make(map[cudnn.ConvShape]*cudnn.Conv)
	return true
}

func (e *cudaEngine) hasCuDNN() bool { return e.initCuDNN() }

func (e *cudaEngine) cudnnDesc(sh cudnn.ConvShape) (*cudnn.Conv, error) {
	if !e.initCuDNN() {
		return nil, fmt.Errorf("cuDNN unavailable: %w", e.dnnErr)
	}
	c, ok := e.dnnConvs[sh]
	if !ok {
		var err error
		if c, err = e.dnn.NewConv(sh); err != nil {
			return nil, err
		}
		e.dnnConvs[sh] = c
	}
	return c, nil
}

func (e *cudaEngine) cudnnFind(sh cudnn.ConvShape, x, w, y uint64) ([]cudnn.AlgoPerf, error) {
	c, err := e.cudnnDesc(sh)
	if err != nil {
		return nil, err
	}
	return c.Find(e.dnnH, cu.DevicePtr(x), cu.DevicePtr(w), cu.DevicePtr(y), e.dnnWS, cudnnWorkspace)
}

func (e *cudaEngine) cudnnConv(k *cudnnCall) error {
	c, err := e.cudnnDesc(k.shape)
	if err != nil {
		return err
	}
	if k.b != 0 {
		return c.ForwardBias(e.dnnH, k.algo, cu.DevicePtr(k.x), cu.DevicePtr(k.w), cu.DevicePtr(k.y), cu.DevicePtr(k.z), cu.DevicePtr(k.b), e.dnnWS, cudnnWorkspace)
	}
	return c.Forward(e.dnnH, k.algo, cu.DevicePtr(k.x), cu.DevicePtr(k.w), cu.DevicePtr(k.y), e.dnnWS, cudnnWorkspace)
}

// initLt opens cuBLASLt on first use.
func (e *cudaEngine) initLt() bool {
	if e.lt != nil || e.ltErr != nil {
		return e.lt != nil
	}
	lt, err := e.blas.LoadLt()
	if err == nil {
		e.ltH, err = lt.Create()
	}
	if err != nil {
		e.ltErr = err
		return false
	}
	e.lt = lt
	e.ltPlans = make(map[cublas.LtShape]*cublas.LtPlan)
	return true
}

func (e *cudaEngine) hasLt() bool { return e.initLt() }

func (e *cudaEngine) ltMatmul(k *ltCall) error {
	if !e.initLt() {
		return fmt.Errorf("cuBLASLt unavailable: %w", e.ltErr)
	}
	p, ok := e.ltPlans[k.shape]
	if !ok {
		var err error
		if p, err = e.lt.Plan(e.ltH, k.shape, workspaceLen); err != nil {
			return err
		}
		e.ltPlans[k.shape] = p
	}
	return p.Run(e.ltH, cu.DevicePtr(k.a), cu.DevicePtr(k.b), cu.DevicePtr(k.c), cu.DevicePtr(k.d), cu.DevicePtr(k.e), cu.DevicePtr(k.sa), cu.DevicePtr(k.sb), k.beta, e.ws, workspaceLen, e.stream)
}

func (e *cudaEngine) destroyEvent(ev eventHandle) { _ = e.drv.EventDestroy(cu.Event(ev)) }
