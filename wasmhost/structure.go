package wasmhost

import (
	"errors"
	"fmt"
)

// StructureLimits bound what a module may contain, checked by a linear
// scan of the binary before wazero compiles it, so that a module built to
// be expensive to compile (a br_table with millions of targets, a million
// nested blocks, huge function or local counts) is refused in milliseconds
// instead of holding a compiler and gigabytes for minutes. Zero fields take
// the defaults shown; they leave room for Go-built guests (about 2 MB,
// a few thousand functions).
type StructureLimits struct {
	// MaxBytes bounds the module's size (16 MiB).
	MaxBytes int
	// MaxFunctions bounds defined plus imported functions (20,000).
	MaxFunctions int
	// MaxFunctionBytes bounds one function body (1 MiB).
	MaxFunctionBytes int
	// MaxLocals bounds the locals of one function (10,000).
	MaxLocals int
	// MaxBrTableTargets bounds one br_table's targets (10,000).
	MaxBrTableTargets int
	// MaxTotalBrTableTargets bounds all br_table targets of the module
	// (500,000).
	MaxTotalBrTableTargets int
	// MaxNesting bounds nested blocks, loops and ifs in a function (1,000).
	MaxNesting int
	// MaxInstructions bounds the instructions of the module (4,000,000).
	MaxInstructions int
}

func (l StructureLimits) withDefaults() StructureLimits {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.MaxBytes, 16<<20)
	def(&l.MaxFunctions, 20000)
	def(&l.MaxFunctionBytes, 1<<20)
	def(&l.MaxLocals, 10000)
	def(&l.MaxBrTableTargets, 10000)
	def(&l.MaxTotalBrTableTargets, 500000)
	def(&l.MaxNesting, 1000)
	def(&l.MaxInstructions, 4000000)
	return l
}

// Structure is what the scan counted.
type Structure struct {
	Bytes, Functions, Instructions    int
	MaxFunctionBytes, MaxLocals       int
	MaxBrTableTargets, BrTableTargets int
	MaxNesting                        int
}

// ErrStructure is wrapped by every structural refusal.
var ErrStructure = errors.New("wasmhost: module structure over the limits")

// CheckStructure scans a module binary and reports the first limit it
// exceeds (wrapping ErrStructure) or a malformed binary. It never
// allocates in proportion to counts the binary claims.
func CheckStructure(wasm []byte, lim StructureLimits) (Structure, error) {
	lim = lim.withDefaults()
	st := Structure{Bytes: len(wasm)}
	if len(wasm) > lim.MaxBytes {
		return st, fmt.Errorf("%w: %d bytes, the limit is %d", ErrStructure, len(wasm), lim.MaxBytes)
	}
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" || string(wasm[4:8]) != "\x01\x00\x00\x00" {
		return st, errors.New("wasmhost: not a WebAssembly 1.0 binary")
	}
	r := &reader{b: wasm, i: 8}
	for !r.done() {
		id := r.byte()
		size := r.u32()
		if r.err != nil || size > uint64(len(wasm)-r.i) {
			return st, fmt.Errorf("wasmhost: malformed section header at byte %d", r.i)
		}
		sec := &reader{b: wasm[:r.i+int(size)], i: r.i}
		r.i += int(size)
		switch id {
		case 2: // imports: count imported functions
			n := sec.u32()
			for k := uint64(0); k < n && sec.err == nil; k++ {
				sec.skip(int(sec.u32())) // module
				sec.skip(int(sec.u32())) // name
				kind := sec.byte()
				switch kind {
				case 0:
					sec.u32()
					st.Functions++
				case 1: // table: reftype + limits
					sec.byte()
					sec.limits()
				case 2:
					sec.limits()
				case 3:
					sec.byte()
					sec.byte()
				default:
					return st, fmt.Errorf("wasmhost: malformed import kind %d", kind)
				}
				if st.Functions > lim.MaxFunctions {
					return st, fmt.Errorf("%w: more than %d functions", ErrStructure, lim.MaxFunctions)
				}
			}
			if sec.err != nil {
				return st, fmt.Errorf("wasmhost: malformed import section: %w", sec.err)
			}
		case 10: // code
			n := sec.u32()
			if sec.err != nil || n > uint64(lim.MaxFunctions) || st.Functions+int(n) > lim.MaxFunctions {
				return st, fmt.Errorf("%w: %d functions, the limit is %d", ErrStructure, st.Functions+int(n), lim.MaxFunctions)
			}
			st.Functions += int(n)
			for k := uint64(0); k < n; k++ {
				size := sec.u32()
				if sec.err != nil || size > uint64(len(sec.b)-sec.i) {
					return st, errors.New("wasmhost: malformed code section")
				}
				if int(size) > lim.MaxFunctionBytes {
					return st, fmt.Errorf("%w: a function body of %d bytes, the limit is %d", ErrStructure, size, lim.MaxFunctionBytes)
				}
				st.MaxFunctionBytes = max(st.MaxFunctionBytes, int(size))
				body := &reader{b: sec.b[:sec.i+int(size)], i: sec.i}
				sec.i += int(size)
				if err := scanBody(body, lim, &st); err != nil {
					return st, err
				}
			}
		}
	}
	if r.err != nil {
		return st, fmt.Errorf("wasmhost: malformed module: %w", r.err)
	}
	return st, nil
}

// scanBody checks one function body: locals, nesting, br_table targets and
// instruction count.
func scanBody(r *reader, lim StructureLimits, st *Structure) error {
	groups := r.u32()
	locals := uint64(0)
	for g := uint64(0); g < groups && r.err == nil; g++ {
		locals += r.u32()
		r.byte()
		if locals > uint64(lim.MaxLocals) {
			return fmt.Errorf("%w: a function with more than %d locals", ErrStructure, lim.MaxLocals)
		}
	}
	st.MaxLocals = max(st.MaxLocals, int(locals))
	depth := 1 // the function body itself
	for !r.done() && r.err == nil {
		op := r.byte()
		st.Instructions++
		if st.Instructions > lim.MaxInstructions {
			return fmt.Errorf("%w: more than %d instructions", ErrStructure, lim.MaxInstructions)
		}
		switch {
		case op == 0x02 || op == 0x03 || op == 0x04: // block, loop, if
			r.blockType()
			depth++
			if depth-1 > lim.MaxNesting {
				return fmt.Errorf("%w: blocks nested more than %d deep", ErrStructure, lim.MaxNesting)
			}
			st.MaxNesting = max(st.MaxNesting, depth-1)
		case op == 0x0b: // end
			depth--
			if depth == 0 && !r.done() {
				return errors.New("wasmhost: malformed function body: code after its end")
			}
		case op == 0x0e: // br_table
			n := r.u32()
			if r.err != nil {
				break
			}
			if n > uint64(lim.MaxBrTableTargets) {
				return fmt.Errorf("%w: a br_table with %d targets, the limit is %d", ErrStructure, n, lim.MaxBrTableTargets)
			}
			st.BrTableTargets += int(n)
			st.MaxBrTableTargets = max(st.MaxBrTableTargets, int(n))
			if st.BrTableTargets > lim.MaxTotalBrTableTargets {
				return fmt.Errorf("%w: more than %d br_table targets in the module", ErrStructure, lim.MaxTotalBrTableTargets)
			}
			for k := uint64(0); k <= n && r.err == nil; k++ {
				r.u32()
			}
		default:
			if err := r.immediates(op); err != nil {
				return err
			}
		}
	}
	if r.err != nil {
		return fmt.Errorf("wasmhost: malformed function body: %w", r.err)
	}
	if depth != 0 {
		return errors.New("wasmhost: malformed function body: unbalanced blocks")
	}
	return nil
}

// reader decodes a Wasm binary; the first error sticks and stops it.
type reader struct {
	b   []byte
	i   int
	err error
}

var errTruncated = errors.New("truncated")

func (r *reader) done() bool { return r.err != nil || r.i >= len(r.b) }

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.i >= len(r.b) {
		r.err = errTruncated
		return 0
	}
	c := r.b[r.i]
	r.i++
	return c
}

func (r *reader) skip(n int) {
	if r.err != nil {
		return
	}
	if n < 0 || n > len(r.b)-r.i {
		r.err = errTruncated
		return
	}
	r.i += n
}

// leb reads a LEB128 number of at most maxBytes bytes (its value, unsigned).
func (r *reader) leb(maxBytes int) uint64 {
	var v uint64
	for k := 0; k < maxBytes; k++ {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if k < 10 {
			v |= uint64(c&0x7f) << (7 * k)
		}
		if c&0x80 == 0 {
			return v
		}
	}
	r.err = errors.New("overlong LEB128")
	return 0
}

func (r *reader) u32() uint64 { return r.leb(5) }

func (r *reader) limits() {
	flags := r.byte()
	r.u32()
	if flags&1 != 0 {
		r.u32()
	}
}

// blockType skips a block type: 0x40, a value type, or a type index (s33).
func (r *reader) blockType() {
	if r.i < len(r.b) && (r.b[r.i] == 0x40 || r.b[r.i] >= 0x6f && r.b[r.i] <= 0x7f) {
		r.i++
		return
	}
	r.leb(5)
}

func (r *reader) memarg() { r.u32(); r.u32() }

// immediates skips the immediates of op (every opcode but the block ones
// and br_table, which the caller handles); an unknown opcode is an error.
func (r *reader) immediates(op byte) error {
	switch {
	case op == 0x00 || op == 0x01 || op == 0x05 || op == 0x0f || op == 0x1a || op == 0x1b || op == 0xd1:
	case op == 0x0c || op == 0x0d: // br, br_if
		r.u32()
	case op == 0x10: // call
		r.u32()
	case op == 0x11: // call_indirect
		r.u32()
		r.u32()
	case op == 0x1c: // select t*
		n := r.u32()
		r.skip(int(min(n, uint64(len(r.b)))))
	case op >= 0x20 && op <= 0x24: // local/global get/set/tee
		r.u32()
	case op == 0x25 || op == 0x26: // table.get/set
		r.u32()
	case op >= 0x28 && op <= 0x3e: // loads and stores
		r.memarg()
	case op == 0x3f || op == 0x40: // memory.size/grow
		r.byte()
	case op == 0x41: // i32.const
		r.leb(5)
	case op == 0x42: // i64.const
		r.leb(10)
	case op == 0x43:
		r.skip(4)
	case op == 0x44:
		r.skip(8)
	case op >= 0x45 && op <= 0xc4: // numeric, no immediates
	case op == 0xd0: // ref.null t
		r.byte()
	case op == 0xd2: // ref.func
		r.u32()
	case op == 0xfc:
		return r.prefixFC()
	case op == 0xfd:
		return r.prefixFD()
	default:
		return fmt.Errorf("wasmhost: unsupported instruction 0x%02x", op)
	}
	return nil
}

func (r *reader) prefixFC() error {
	sub := r.u32()
	switch {
	case sub <= 7: // saturating truncations
	case sub == 8: // memory.init
		r.u32()
		r.byte()
	case sub == 9: // data.drop
		r.u32()
	case sub == 10: // memory.copy
		r.byte()
		r.byte()
	case sub == 11: // memory.fill
		r.byte()
	case sub == 12: // table.init
		r.u32()
		r.u32()
	case sub == 13: // elem.drop
		r.u32()
	case sub == 14: // table.copy
		r.u32()
		r.u32()
	case sub >= 15 && sub <= 17: // table.grow/size/fill
		r.u32()
	default:
		return fmt.Errorf("wasmhost: unsupported instruction 0xfc %d", sub)
	}
	return nil
}

func (r *reader) prefixFD() error {
	sub := r.u32()
	switch {
	case sub <= 11 || sub == 92 || sub == 93: // v128 loads and stores
		r.memarg()
	case sub == 12 || sub == 13: // v128.const, i8x16.shuffle
		r.skip(16)
	case sub >= 21 && sub <= 34: // extract/replace lane
		r.byte()
	case sub >= 84 && sub <= 91: // load/store lane
		r.memarg()
		r.byte()
	case sub <= 255:
	default:
		return fmt.Errorf("wasmhost: unsupported instruction 0xfd %d", sub)
	}
	return nil
}
