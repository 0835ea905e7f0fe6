package cu

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Result codes of the driver API that callers test for.
const (
	errOutOfMemory   = 2
	errNotInitialize = 3
	errNoDevice      = 100
)

// Error is a failed driver call.
type Error struct {
	Op   string // the driver function
	Code int    // the CUresult
	Name string // e.g. CUDA_ERROR_OUT_OF_MEMORY
	Msg  string // the driver's description
}

// Error names the call, the driver's error name and code, and its description.
func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s (%d): %s", e.Op, e.Name, e.Code, e.Msg)
}

// ErrOutOfMemory is matched (errors.Is) by driver out-of-memory errors.
var ErrOutOfMemory = errors.New("CUDA out of memory")

// Is makes errors.Is(err, ErrOutOfMemory) hold for CUDA_ERROR_OUT_OF_MEMORY.
func (e *Error) Is(target error) bool { return target == ErrOutOfMemory && e.Code == errOutOfMemory }

// IsNoDevice reports whether err says that no CUDA device exists.
func IsNoDevice(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == errNoDevice
}

// Handle types of the driver API.
type (
	Device    int32   // CUdevice
	Context   uintptr // CUcontext
	Stream    uintptr // CUstream
	Event     uintptr // CUevent
	Module    uintptr // CUmodule
	Function  uintptr // CUfunction
	Graph     uintptr // CUgraph
	GraphExec uintptr // CUgraphExec
	DevicePtr uint64  // CUdeviceptr
)

// Device attributes used by Kiln (CUdevice_attribute values).
const (
	AttrMultiprocessorCount       = 16
	AttrL2CacheSize               = 38
	AttrComputeCapabilityMajor    = 75
	AttrComputeCapabilityMinor    = 76
	AttrMaxSharedMemPerBlockOptin = 97
)

// FuncAttrMaxDynamicSharedBytes is CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.
const FuncAttrMaxDynamicSharedBytes = 8

// Stream capture modes.
const (
	CaptureModeGlobal      = 0
	CaptureModeThreadLocal = 1
	CaptureModeRelaxed     = 2
)

// Driver holds the bound driver functions. Its methods are safe to call from
// any thread, but those that use a context need it current on the thread.
type Driver struct {
	lib     *Library
	version int

	fInit, fDriverGetVersion, fGetErrorName, fGetErrorString                    uintptr
	fDeviceGetCount, fDeviceGet, fDeviceGetName, fDeviceGetAttribute, fTotalMem uintptr
	fPrimaryCtxRetain, fPrimaryCtxRelease, fCtxSetCurrent, fCtxSynchronize      uintptr
	fMemAlloc, fMemFree, fMemAllocHost, fMemFreeHost, fMemGetInfo               uintptr
	fMemcpyHtoDAsync, fMemcpyDtoHAsync, fMemcpyDtoDAsync, fMemsetD8Async        uintptr
	fMemcpyHtoD, fMemcpyDtoH                                                    uintptr
	fStreamCreate, fStreamDestroy, fStreamSynchronize                           uintptr
	fEventCreate, fEventDestroy, fEventRecord, fEventSynchronize, fEventElapsed uintptr
	fModuleLoadData, fModuleUnload, fModuleGetFunction, fFuncSetAttribute       uintptr
	fLaunchKernel                                                               uintptr
	fStreamBeginCapture, fStreamEndCapture, fGraphInstantiate, fGraphLaunch     uintptr
	fGraphExecDestroy, fGraphDestroy, fGraphGetNodes                            uintptr
}

// Load opens libcuda.so.1, binds the functions and calls cuInit. The error
// says why when no usable driver is present.
func Load() (*Driver, error) {
	lib, err := Open([]string{"libcuda.so.1", "libcuda.so"}, LibraryDirs())
	if err != nil {
		return nil, fmt.Errorf("CUDA driver: %w", err)
	}
	d := &Driver{lib: lib}
	syms := []struct {
		p    *uintptr
		name string
	}{
		{&d.fInit, "cuInit"}, {&d.fDriverGetVersion, "cuDriverGetVersion"},
		{&d.fGetErrorName, "cuGetErrorName"}, {&d.fGetErrorString, "cuGetErrorString"},
		{&d.fDeviceGetCount, "cuDeviceGetCount"}, {&d.fDeviceGet, "cuDeviceGet"},
		{&d.fDeviceGetName, "cuDeviceGetName"}, {&d.fDeviceGetAttribute, "cuDeviceGetAttribute"},
		{&d.fTotalMem, "cuDeviceTotalMem_v2"},
		{&d.fPrimaryCtxRetain, "cuDevicePrimaryCtxRetain"}, {&d.fPrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"},
		{&d.fCtxSetCurrent, "cuCtxSetCurrent"}, {&d.fCtxSynchronize, "cuCtxSynchronize"},
		{&d.fMemAlloc, "cuMemAlloc_v2"}, {&d.fMemFree, "cuMemFree_v2"},
		{&d.fMemAllocHost, "cuMemAllocHost_v2"}, {&d.fMemFreeHost, "cuMemFreeHost"},
		{&d.fMemGetInfo, "cuMemGetInfo_v2"},
		{&d.fMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2"}, {&d.fMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2"},
		{&d.fMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2"}, {&d.fMemsetD8Async, "cuMemsetD8Async"},
		{&d.fMemcpyHtoD, "cuMemcpyHtoD_v2"}, {&d.fMemcpyDtoH, "cuMemcpyDtoH_v2"},
		{&d.fStreamCreate, "cuStreamCreate"}, {&d.fStreamDestroy, "cuStreamDestroy_v2"},
		{&d.fStreamSynchronize, "cuStreamSynchronize"},
		{&d.fEventCreate, "cuEventCreate"}, {&d.fEventDestroy, "cuEventDestroy_v2"},
		{&d.fEventRecord, "cuEventRecord"}, {&d.fEventSynchronize, "cuEventSynchronize"},
		{&d.fEventElapsed, "cuEventElapsedTime"},
		{&d.fModuleLoadData, "cuModuleLoadData"}, {&d.fModuleUnload, "cuModuleUnload"},
		{&d.fModuleGetFunction, "cuModuleGetFunction"}, {&d.fFuncSetAttribute, "cuFuncSetAttribute"},
		{&d.fLaunchKernel, "cuLaunchKernel"},
		{&d.fStreamBeginCapture, "cuStreamBeginCapture_v2"}, {&d.fStreamEndCapture, "cuStreamEndCapture"},
		{&d.fGraphInstantiate, "cuGraphInstantiateWithFlags"}, {&d.fGraphLaunch, "cuGraphLaunch"},
		{&d.fGraphExecDestroy, "cuGraphExecDestroy"}, {&d.fGraphDestroy, "cuGraphDestroy"},
		{&d.fGraphGetNodes, "cuGraphGetNodes"},
	}
	for _, s := range syms {
		p, err := lib.Symbol(s.name)
		if err != nil {
			return nil, fmt.Errorf("CUDA driver too old or broken: %w", err)
		}
		*s.p = p
	}
	if err := d.call("cuInit", d.fInit, 0); err != nil {
		return nil, err
	}
	var v int32
	if err := d.call("cuDriverGetVersion", d.fDriverGetVersion, uintptr(unsafe.Pointer(&v))); err != nil {
		return nil, err
	}
	d.version = int(v)
	return d, nil
}

// LibraryPath returns the path the driver library was opened from.
func (d *Driver) LibraryPath() string { return d.lib.Path }

// Version returns the driver's CUDA version as 1000·major + 10·minor.
func (d *Driver) Version() int { return d.version }

// call invokes fn and converts a non-zero CUresult into *Error.
//
//go:uintptrescapes
func (d *Driver) call(op string, fn uintptr, args ...uintptr) error {
	r, _, _ := purego.SyscallN(fn, args...)
	if code := int32(r); code != 0 {
		return d.makeError(op, int(code))
	}
	return nil
}

func (d *Driver) makeError(op string, code int) error {
	e := &Error{Op: op, Code: code, Name: fmt.Sprintf("CUresult(%d)", code)}
	var p unsafe.Pointer
	if r, _, _ := purego.SyscallN(d.fGetErrorName, uintptr(code), uintptr(unsafe.Pointer(&p))); int32(r) == 0 && p != nil {
		e.Name = cString(p)
	}
	p = nil
	if r, _, _ := purego.SyscallN(d.fGetErrorString, uintptr(code), uintptr(unsafe.Pointer(&p))); int32(r) == 0 && p != nil {
		e.Msg = cString(p)
	}
	return e
}

// cString copies a NUL-terminated C string.
func cString(p unsafe.Pointer) string {
	var b []byte
	for i := 0; i < 4096; i++ {
		c := *(*byte)(unsafe.Add(p, i))
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}

// DeviceCount returns the number of CUDA devices.
func (d *Driver) DeviceCount() (int, error) {
	var n int32
	err := d.call("cuDeviceGetCount", d.fDeviceGetCount, uintptr(unsafe.Pointer(&n)))
	return int(n), err
}

// DeviceGet returns the device with ordinal i.
func (d *Driver) DeviceGet(i int) (Device, error) {
	var dev int32
	err := d.call("cuDeviceGet", d.fDeviceGet, uintptr(unsafe.Pointer(&dev)), uintptr(i))
	return Device(dev), err
}

// DeviceName returns the device's marketing name.
func (d *Driver) DeviceName(dev Device) (string, error) {
	buf := make([]byte, 256)
	if err := d.call("cuDeviceGetName", d.fDeviceGetName, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), uintptr(dev)); err != nil {
		return "", err
	}
	for i, c := range buf {
		if c == 0 {
			return string(buf[:i]), nil
		}
	}
	return string(buf), nil
}

// DeviceAttribute returns one CUdevice_attribute.
func (d *Driver) DeviceAttribute(dev Device, attr int) (int, error) {
	var v int32
	err := d.call("cuDeviceGetAttribute", d.fDeviceGetAttribute, uintptr(unsafe.Pointer(&v)), uintptr(attr), uintptr(dev))
	return int(v), err
}

// TotalMem returns the device memory in bytes.
func (d *Driver) TotalMem(dev Device) (int64, error) {
	var v uint64
	err := d.call("cuDeviceTotalMem", d.fTotalMem, uintptr(unsafe.Pointer(&v)), uintptr(dev))
	return int64(v), err
}

// PrimaryCtxRetain retains the device's primary context.
func (d *Driver) PrimaryCtxRetain(dev Device) (Context, error) {
	var c uintptr
	err := d.call("cuDevicePrimaryCtxRetain", d.fPrimaryCtxRetain, uintptr(unsafe.Pointer(&c)), uintptr(dev))
	return Context(c), err
}

// PrimaryCtxRelease releases the primary context.
func (d *Driver) PrimaryCtxRelease(dev Device) error {
	return d.call("cuDevicePrimaryCtxRelease", d.fPrimaryCtxRelease, uintptr(dev))
}

// CtxSetCurrent binds ctx to the calling OS thread.
func (d *Driver) CtxSetCurrent(ctx Context) error {
	return d.call("cuCtxSetCurrent", d.fCtxSetCurrent, uintptr(ctx))
}

// CtxSynchronize waits for all work of the current context.
func (d *Driver) CtxSynchronize() error { return d.call("cuCtxSynchronize", d.fCtxSynchronize) }

// MemAlloc allocates device memory.
func (d *Driver) MemAlloc(n int64) (DevicePtr, error) {
	var p uint64
	err := d.call("cuMemAlloc", d.fMemAlloc, uintptr(unsafe.Pointer(&p)), uintptr(n))
	return DevicePtr(p), err
}

// MemFree frees device memory.
func (d *Driver) MemFree(p DevicePtr) error { return d.call("cuMemFree", d.fMemFree, uintptr(p)) }

// MemAllocHost allocates page-locked host memory of n bytes. The memory is
// outside the Go heap; free it with MemFreeHost.
func (d *Driver) MemAllocHost(n int64) (unsafe.Pointer, error) {
	var p unsafe.Pointer
	err := d.call("cuMemAllocHost", d.fMemAllocHost, uintptr(unsafe.Pointer(&p)), uintptr(n))
	return p, err
}

// MemFreeHost frees memory from MemAllocHost.
func (d *Driver) MemFreeHost(p unsafe.Pointer) error {
	return d.call("cuMemFreeHost", d.fMemFreeHost, uintptr(p))
}

// MemGetInfo returns the free and total device memory of the current context.
func (d *Driver) MemGetInfo() (free, total int64, err error) {
	var f, t uint64
	err = d.call("cuMemGetInfo", d.fMemGetInfo, uintptr(unsafe.Pointer(&f)), uintptr(unsafe.Pointer(&t)))
	return int64(f), int64(t), err
}

// MemcpyHtoDAsync copies n bytes from host memory at src to dst on stream.
// src must stay valid until the copy completes (page-locked memory makes the
// copy truly asynchronous).
func (d *Driver) MemcpyHtoDAsync(dst DevicePtr, src unsafe.Pointer, n int64, s Stream) error {
	return d.call("cuMemcpyHtoDAsync", d.fMemcpyHtoDAsync, uintptr(dst), uintptr(src), uintptr(n), uintptr(s))
}

// MemcpyDtoHAsync copies n bytes from device memory to host memory on stream.
func (d *Driver) MemcpyDtoHAsync(dst unsafe.Pointer, src DevicePtr, n int64, s Stream) error {
	return d.call("cuMemcpyDtoHAsync", d.fMemcpyDtoHAsync, uintptr(dst), uintptr(src), uintptr(n), uintptr(s))
}

// MemcpyHtoD copies synchronously from a Go byte slice.
func (d *Driver) MemcpyHtoD(dst DevicePtr, src []byte) error {
	if len(src) == 0 {
		return nil
	}
	return d.call("cuMemcpyHtoD", d.fMemcpyHtoD, uintptr(dst), uintptr(unsafe.Pointer(&src[0])), uintptr(len(src)))
}

// MemcpyDtoH copies synchronously into a Go byte slice.
func (d *Driver) MemcpyDtoH(dst []byte, src DevicePtr) error {
	if len(dst) == 0 {
		return nil
	}
	return d.call("cuMemcpyDtoH", d.fMemcpyDtoH, uintptr(unsafe.Pointer(&dst[0])), uintptr(src), uintptr(len(dst)))
}

// MemcpyDtoDAsync copies device memory on stream.
func (d *Driver) MemcpyDtoDAsync(dst, src DevicePtr, n int64, s Stream) error {
	return d.call("cuMemcpyDtoDAsync", d.fMemcpyDtoDAsync, uintptr(dst), uintptr(src), uintptr(n), uintptr(s))
}

// MemsetD8Async sets n bytes to v on stream.
func (d *Driver) MemsetD8Async(dst DevicePtr, v byte, n int64, s Stream) error {
	return d.call("cuMemsetD8Async", d.fMemsetD8Async, uintptr(dst), uintptr(v), uintptr(n), uintptr(s))
}

// StreamCreate creates a stream; flags 1 makes it non-blocking.
func (d *Driver) StreamCreate(flags int) (Stream, error) {
	var s uintptr
	err := d.call("cuStreamCreate", d.fStreamCreate, uintptr(unsafe.Pointer(&s)), uintptr(flags))
	return Stream(s), err
}

// StreamDestroy destroys a stream.
func (d *Driver) StreamDestroy(s Stream) error {
	return d.call("cuStreamDestroy", d.fStreamDestroy, uintptr(s))
}

// StreamSynchronize waits for all work on s.
func (d *Driver) StreamSynchronize(s Stream) error {
	return d.call("cuStreamSynchronize", d.fStreamSynchronize, uintptr(s))
}

// EventCreate creates an event; flags 2 disables timing.
func (d *Driver) EventCreate(flags int) (Event, error) {
	var e uintptr
	err := d.call("cuEventCreate", d.fEventCreate, uintptr(unsafe.Pointer(&e)), uintptr(flags))
	return Event(e), err
}

// EventDestroy destroys an event.
func (d *Driver) EventDestroy(e Event) error {
	return d.call("cuEventDestroy", d.fEventDestroy, uintptr(e))
}

// EventRecord records e on s.
func (d *Driver) EventRecord(e Event, s Stream) error {
	return d.call("cuEventRecord", d.fEventRecord, uintptr(e), uintptr(s))
}

// EventSynchronize waits for e.
func (d *Driver) EventSynchronize(e Event) error {
	return d.call("cuEventSynchronize", d.fEventSynchronize, uintptr(e))
}

// EventElapsed returns the milliseconds between two recorded events.
func (d *Driver) EventElapsed(start, end Event) (float32, error) {
	var ms float32
	err := d.call("cuEventElapsedTime", d.fEventElapsed, uintptr(unsafe.Pointer(&ms)), uintptr(start), uintptr(end))
	return ms, err
}

// ModuleLoadData loads a cubin, PTX or fat binary image.
func (d *Driver) ModuleLoadData(image []byte) (Module, error) {
	if len(image) == 0 {
		return 0, errors.New("cuModuleLoadData: empty image")
	}
	var m uintptr
	err := d.call("cuModuleLoadData", d.fModuleLoadData, uintptr(unsafe.Pointer(&m)), uintptr(unsafe.Pointer(&image[0])))
	return Module(m), err
}

// ModuleUnload unloads a module.
func (d *Driver) ModuleUnload(m Module) error {
	return d.call("cuModuleUnload", d.fModuleUnload, uintptr(m))
}

// ModuleGetFunction looks up a kernel by its (extern "C") name.
func (d *Driver) ModuleGetFunction(m Module, name string) (Function, error) {
	var f uintptr
	cname := append([]byte(name), 0)
	err := d.call("cuModuleGetFunction("+name+")", d.fModuleGetFunction, uintptr(unsafe.Pointer(&f)), uintptr(m), uintptr(unsafe.Pointer(&cname[0])))
	return Function(f), err
}

// FuncSetAttribute sets a CUfunction_attribute.
func (d *Driver) FuncSetAttribute(f Function, attr, value int) error {
	return d.call("cuFuncSetAttribute", d.fFuncSetAttribute, uintptr(f), uintptr(attr), uintptr(value))
}

// LaunchKernel launches f. params points to an array of pointers, one per
// kernel parameter, each pointing at the parameter's value; it must not be
// Go memory holding Go pointers (Kiln passes page-locked host memory).
func (d *Driver) LaunchKernel(f Function, grid, block [3]uint32, sharedBytes uint32, s Stream, params unsafe.Pointer) error {
	return d.call("cuLaunchKernel", d.fLaunchKernel, uintptr(f),
		uintptr(grid[0]), uintptr(grid[1]), uintptr(grid[2]),
		uintptr(block[0]), uintptr(block[1]), uintptr(block[2]),
		uintptr(sharedBytes), uintptr(s), uintptr(params), 0)
}

// StreamBeginCapture starts capturing work on s into a graph.
func (d *Driver) StreamBeginCapture(s Stream, mode int) error {
	return d.call("cuStreamBeginCapture", d.fStreamBeginCapture, uintptr(s), uintptr(mode))
}

// StreamEndCapture ends capture on s and returns the captured graph.
func (d *Driver) StreamEndCapture(s Stream) (Graph, error) {
	var g uintptr
	err := d.call("cuStreamEndCapture", d.fStreamEndCapture, uintptr(s), uintptr(unsafe.Pointer(&g)))
	return Graph(g), err
}

// GraphNodeCount returns the number of nodes in g.
func (d *Driver) GraphNodeCount(g Graph) (int, error) {
	var n uint64
	err := d.call("cuGraphGetNodes", d.fGraphGetNodes, uintptr(g), 0, uintptr(unsafe.Pointer(&n)))
	return int(n), err
}

// GraphInstantiate makes an executable graph.
func (d *Driver) GraphInstantiate(g Graph) (GraphExec, error) {
	var e uintptr
	err := d.call("cuGraphInstantiateWithFlags", d.fGraphInstantiate, uintptr(unsafe.Pointer(&e)), uintptr(g), 0)
	return GraphExec(e), err
}

// GraphLaunch launches an executable graph on s.
func (d *Driver) GraphLaunch(e GraphExec, s Stream) error {
	return d.call("cuGraphLaunch", d.fGraphLaunch, uintptr(e), uintptr(s))
}

// GraphExecDestroy destroys an executable graph.
func (d *Driver) GraphExecDestroy(e GraphExec) error {
	return d.call("cuGraphExecDestroy", d.fGraphExecDestroy, uintptr(e))
}

// GraphDestroy destroys a graph.
func (d *Driver) GraphDestroy(g Graph) error {
	return d.call("cuGraphDestroy", d.fGraphDestroy, uintptr(g))
}
