package wasmhost

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// The host offers exactly the WASI preview 1 functions that Go's wasip1
// runtime, the syscall package's initialisation (which comes with any use
// of package time) and package os's standard files (which come with fmt)
// import, made deterministic: no arguments,
// a fixed environment (guestEnviron), a virtual clock (the wall clock
// reads the input's "now", the monotonic clock advances 1 µs per read,
// sleeping advances it instead of blocking), a seeded random stream, and
// stdout/stderr sent to the rate-limited log. There is no filesystem (no
// preopened directory, and no path or file functions: a module that
// imports them, as one opening files does, is refused), no socket and no
// real time.

// WASI errno values.
const (
	errnoSuccess = 0
	errnoBadf    = 8
	errnoFault   = 21
	errnoInval   = 28
)

const (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
	f32 = api.ValueTypeF32
)

// hostFunc is one function the host offers to guests.
type hostFunc struct {
	name    string
	params  []api.ValueType
	results []api.ValueType
	fn      api.GoModuleFunc
}

func wasiFuncs() []hostFunc {
	none := func(_ context.Context, _ api.Module, stack []uint64) { stack[0] = errnoSuccess }
	zeroSizes := func(_ context.Context, m api.Module, stack []uint64) {
		if !m.Memory().WriteUint32Le(uint32(stack[0]), 0) || !m.Memory().WriteUint32Le(uint32(stack[1]), 0) {
			stack[0] = errnoFault
			return
		}
		stack[0] = errnoSuccess
	}
	return []hostFunc{
		{"args_get", []api.ValueType{i32, i32}, []api.ValueType{i32}, none},
		{"args_sizes_get", []api.ValueType{i32, i32}, []api.ValueType{i32}, zeroSizes},
		{"environ_get", []api.ValueType{i32, i32}, []api.ValueType{i32}, environGet},
		{"environ_sizes_get", []api.ValueType{i32, i32}, []api.ValueType{i32}, environSizesGet},
		{"clock_time_get", []api.ValueType{i32, i64, i32}, []api.ValueType{i32}, clockTimeGet},
		{"fd_write", []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}, fdWrite},
		{"random_get", []api.ValueType{i32, i32}, []api.ValueType{i32}, randomGet},
		{"poll_oneoff", []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}, pollOneoff},
		{"sched_yield", nil, []api.ValueType{i32}, none},
		{"proc_exit", []api.ValueType{i32}, nil, procExit},
		// What the syscall package's initialisation asks for (stdio flags
		// and preopened directories, of which there are none).
		{"fd_fdstat_get", []api.ValueType{i32, i32}, []api.ValueType{i32}, fdFdstatGet},
		{"fd_fdstat_set_flags", []api.ValueType{i32, i32}, []api.ValueType{i32}, fdFdstatSetFlags},
		{"fd_prestat_get", []api.ValueType{i32, i32}, []api.ValueType{i32}, badf},
		{"fd_prestat_dir_name", []api.ValueType{i32, i32, i32}, []api.ValueType{i32}, badf},
		// What package os links in (with fmt): closing a descriptor, of
		// which there are none to close.
		{"fd_close", []api.ValueType{i32}, []api.ValueType{i32}, badf},
	}
}

// guestEnviron is the fixed environment every guest sees. GOGC=400 makes
// a Go guest collect less often: its live heap is small, and every
// collection stops the only thread the call runs on (it cut the p99 of
// the built-in batching decision several times over). Other languages
// ignore it.
const guestEnviron = "GOGC=400"

func environSizesGet(_ context.Context, m api.Module, stack []uint64) {
	if !m.Memory().WriteUint32Le(uint32(stack[0]), 1) || !m.Memory().WriteUint32Le(uint32(stack[1]), uint32(len(guestEnviron)+1)) {
		stack[0] = errnoFault
		return
	}
	stack[0] = errnoSuccess
}

func environGet(_ context.Context, m api.Module, stack []uint64) {
	ptrs, buf := uint32(stack[0]), uint32(stack[1])
	if !m.Memory().WriteUint32Le(ptrs, buf) || !m.Memory().Write(buf, append([]byte(guestEnviron), 0)) {
		stack[0] = errnoFault
		return
	}
	stack[0] = errnoSuccess
}

func badf(_ context.Context, _ api.Module, stack []uint64) { stack[0] = errnoBadf }

// fdFdstatGet describes stdout and stderr as write-only character
// devices; every other descriptor does not exist.
func fdFdstatGet(_ context.Context, m api.Module, stack []uint64) {
	fd, ptr := uint32(stack[0]), uint32(stack[1])
	if fd != 1 && fd != 2 {
		stack[0] = errnoBadf
		return
	}
	b, ok := m.Memory().Read(ptr, 24)
	if !ok {
		stack[0] = errnoFault
		return
	}
	clear(b)
	b[0] = 2                                   // character device
	binary.LittleEndian.PutUint64(b[8:], 1<<6) // rights: fd_write
	stack[0] = errnoSuccess
}

// fdFdstatSetFlags accepts (and ignores) flags on stdout and stderr.
func fdFdstatSetFlags(_ context.Context, _ api.Module, stack []uint64) {
	if fd := uint32(stack[0]); fd != 1 && fd != 2 {
		stack[0] = errnoBadf
		return
	}
	stack[0] = errnoSuccess
}

func instantiateHostModule(ctx context.Context, rt wazero.Runtime, name string, fns []hostFunc) error {
	b := rt.NewHostModuleBuilder(name)
	for _, f := range fns {
		b.NewFunctionBuilder().WithGoModuleFunction(f.fn, f.params, f.results).Export(f.name)
	}
	if _, err := b.Instantiate(ctx); err != nil {
		return fmt.Errorf("instantiate host module %s: %w", name, err)
	}
	return nil
}

func instantiateWASI(ctx context.Context, rt wazero.Runtime) error {
	return instantiateHostModule(ctx, rt, abi.WASIModule, wasiFuncs())
}

func clockTimeGet(ctx context.Context, m api.Module, stack []uint64) {
	id, resultPtr := uint32(stack[0]), uint32(stack[2])
	st := callStateFrom(ctx)
	var mono, wall uint64
	if st != nil {
		mono = st.inst.tick()
		wall = uint64(st.wallNS) + (mono - st.mono0)
	}
	var v uint64
	switch id {
	case 0: // realtime: the input's now plus the virtual time since the call began
		v = wall
	case 1, 2, 3: // monotonic, process and thread CPU time
		v = mono
	default:
		stack[0] = errnoInval
		return
	}
	if !m.Memory().WriteUint64Le(resultPtr, v) {
		stack[0] = errnoFault
		return
	}
	stack[0] = errnoSuccess
}

func fdWrite(ctx context.Context, m api.Module, stack []uint64) {
	fd, iovs, iovsLen, nwrittenPtr := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])
	if fd != 1 && fd != 2 {
		stack[0] = errnoBadf
		return
	}
	mem := m.Memory()
	var total uint32
	var buf bytes.Buffer
	for i := uint32(0); i < iovsLen; i++ {
		ptr, ok1 := mem.ReadUint32Le(iovs + 8*i)
		n, ok2 := mem.ReadUint32Le(iovs + 8*i + 4)
		if !ok1 || !ok2 {
			stack[0] = errnoFault
			return
		}
		b, ok := mem.Read(ptr, n)
		if !ok {
			stack[0] = errnoFault
			return
		}
		if buf.Len() < maxCapture {
			buf.Write(b)
		}
		total += n
	}
	if st := callStateFrom(ctx); st != nil {
		st.output(int(fd), buf.Bytes())
	}
	if !mem.WriteUint32Le(nwrittenPtr, total) {
		stack[0] = errnoFault
		return
	}
	stack[0] = errnoSuccess
}

func randomGet(ctx context.Context, m api.Module, stack []uint64) {
	ptr, n := uint32(stack[0]), uint32(stack[1])
	b, ok := m.Memory().Read(ptr, n)
	if !ok {
		stack[0] = errnoFault
		return
	}
	st := callStateFrom(ctx)
	if st == nil {
		clear(b)
		stack[0] = errnoSuccess
		return
	}
	var w [8]byte
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(w[:], st.inst.next())
		copy(b[i:], w[:])
	}
	stack[0] = errnoSuccess
}

// pollOneoff answers every subscription at once: clock subscriptions
// advance the virtual monotonic clock to their deadline instead of
// sleeping, and descriptor subscriptions fail with EBADF (there are no
// readable or writable descriptors to wait on).
func pollOneoff(ctx context.Context, m api.Module, stack []uint64) {
	in, out, nsubs, neventsPtr := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])
	if nsubs == 0 || nsubs > 1024 {
		stack[0] = errnoInval
		return
	}
	mem := m.Memory()
	subs, ok1 := mem.Read(in, 48*nsubs)
	events, ok2 := mem.Read(out, 32*nsubs)
	if !ok1 || !ok2 {
		stack[0] = errnoFault
		return
	}
	st := callStateFrom(ctx)
	// Copy the subscriptions first: in and out may overlap.
	subs = append([]byte(nil), subs...)
	for i := uint32(0); i < nsubs; i++ {
		s := subs[48*i : 48*i+48]
		e := events[32*i : 32*i+32]
		userdata := binary.LittleEndian.Uint64(s[0:])
		tag := s[8]
		clear(e)
		binary.LittleEndian.PutUint64(e[0:], userdata)
		e[10] = tag
		switch tag {
		case 0: // clock
			timeout := binary.LittleEndian.Uint64(s[24:])
			flags := binary.LittleEndian.Uint16(s[40:])
			if st != nil {
				if flags&1 != 0 { // absolute deadline on the monotonic clock
					if timeout > st.inst.mono {
						st.inst.mono = timeout
					}
				} else {
					st.inst.mono += timeout
				}
			}
		case 1, 2: // fd_read, fd_write
			binary.LittleEndian.PutUint16(e[8:], errnoBadf)
		default:
			stack[0] = errnoInval
			return
		}
	}
	if !mem.WriteUint32Le(neventsPtr, nsubs) {
		stack[0] = errnoFault
		return
	}
	stack[0] = errnoSuccess
}

func procExit(ctx context.Context, m api.Module, stack []uint64) {
	code := uint32(stack[0])
	_ = m.CloseWithExitCode(ctx, code)
	panic(sys.NewExitError(code))
}
