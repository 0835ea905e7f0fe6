//go:build wasip1

package guest

import (
	"unsafe"

	"github.com/kiln-project/kiln/wasmhost/abi"
)

// The guest's buffers. They are package state by necessity: the host
// writes the input into inBuf between kiln_alloc and the hook call, and
// reads the output from outBuf after the hook returns, so both must
// outlive the calls. An instance is never called concurrently.
var (
	inBuf  []byte
	outBuf []byte
)

//go:wasmexport kiln_abi_version
func abiVersion() int32 { return abi.Version }

//go:wasmexport kiln_abi_minor
func abiMinor() int32 { return abi.Minor }

//go:wasmexport kiln_alloc
func alloc(n int32) int32 {
	if n < 0 {
		return 0
	}
	if cap(inBuf) < int(n) {
		inBuf = make([]byte, n)
	}
	inBuf = inBuf[:n]
	if n == 0 {
		return 0
	}
	return int32(uintptr(unsafe.Pointer(&inBuf[0])))
}

// Serve runs h over the input the host placed at ptr (n bytes, inside the
// buffer kiln_alloc returned) and returns the packed location of the
// output. A panic in h becomes a StatusError output.
func Serve(ptr, n int32, h Handler) (packed int64) {
	if n < 0 || int(n) > len(inBuf) || (n > 0 && uintptr(ptr) != uintptr(unsafe.Pointer(&inBuf[0]))) {
		return pack(abi.EncodeError(outBuf, "input is not the buffer kiln_alloc returned"))
	}
	defer func() {
		if r := recover(); r != nil {
			packed = pack(abi.EncodeError(outBuf, "panic: "+describe(r)))
		}
	}()
	return pack(h(inBuf[:n], outBuf))
}

func pack(out []byte) int64 {
	outBuf = out
	if len(out) == 0 {
		return 0
	}
	return int64(uint64(uintptr(unsafe.Pointer(&out[0])))<<32 | uint64(len(out)))
}

//go:wasmimport kiln log
func hostLog(level int32, ptr unsafe.Pointer, n int32)

//go:wasmimport kiln counter_add
func hostCounterAdd(ptr unsafe.Pointer, n int32, delta int64)

// Log sends msg to the host's log at level. The host rate-limits guest
// logs and truncates long lines.
func Log(level int, msg string) {
	if len(msg) == 0 {
		return
	}
	hostLog(int32(level), unsafe.Pointer(unsafe.StringData(msg)), int32(len(msg)))
}

// Count adds delta to the module's counter name, which the host exports
// as a metric. The host caps the number of distinct names per module.
func Count(name string, delta int64) {
	if len(name) == 0 {
		return
	}
	hostCounterAdd(unsafe.Pointer(unsafe.StringData(name)), int32(len(name)), delta)
}

// describe renders a recovered panic value without fmt (which would add
// hundreds of kilobytes to every guest).
func describe(r any) string {
	switch v := r.(type) {
	case string:
		return v
	case error:
		return v.Error()
	default:
		return "non-string panic value"
	}
}
