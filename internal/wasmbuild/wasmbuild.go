// Package wasmbuild assembles small WebAssembly binaries from function
// bodies written as raw opcodes. Tests use it to make hostile guests
// (infinite loops, runaway memory growth, traps, wrong signatures,
// oversized or malformed answers, unknown imports) in microseconds,
// without a compiler.
package wasmbuild

// Value types.
const (
	I32 byte = 0x7f
	I64 byte = 0x7e
	F32 byte = 0x7d
)

// A few opcodes, enough for the tests' bodies.
const (
	OpUnreachable byte = 0x00
	OpLoop        byte = 0x03
	OpEnd         byte = 0x0b
	OpBr          byte = 0x0c
	OpBrIf        byte = 0x0d
	OpDrop        byte = 0x1a
	OpLocalGet    byte = 0x20
	OpCall        byte = 0x10
	OpMemoryGrow  byte = 0x40
	OpI32Const    byte = 0x41
	OpI64Const    byte = 0x42
	OpI32Ne       byte = 0x47
	BlockEmpty    byte = 0x40
)

// Func is one function: its signature and body (without the locals
// declaration and the final end, which Module adds).
type Func struct {
	Params, Results []byte
	Body            []byte
	Export          string // "" = not exported
}

// Import is one imported function.
type Import struct {
	Module, Name    string
	Params, Results []byte
}

// Data is an active data segment in memory 0.
type Data struct {
	Offset uint32
	Bytes  []byte
}

// Module describes a module with one memory.
type Module struct {
	Imports      []Import
	Funcs        []Func
	MemoryPages  uint32 // minimum pages of memory 0
	MemoryExport string // "" = not exported
	Data         []Data
}

// Uleb appends v in unsigned LEB128.
func Uleb(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
		} else {
			return append(b, c)
		}
	}
}

// Sleb appends v in signed LEB128.
func Sleb(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// I32Const returns the instruction pushing v.
func I32Const(v int32) []byte { return Sleb([]byte{OpI32Const}, int64(v)) }

// I64Const returns the instruction pushing v.
func I64Const(v int64) []byte { return Sleb([]byte{OpI64Const}, v) }

// Cat concatenates instruction sequences.
func Cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func str(b []byte, s string) []byte {
	b = Uleb(b, uint64(len(s)))
	return append(b, s...)
}

func section(out []byte, id byte, body []byte) []byte {
	out = append(out, id)
	out = Uleb(out, uint64(len(body)))
	return append(out, body...)
}

func funcType(params, results []byte) []byte {
	b := []byte{0x60}
	b = Uleb(b, uint64(len(params)))
	b = append(b, params...)
	b = Uleb(b, uint64(len(results)))
	return append(b, results...)
}

// Bytes encodes the module.
func (m *Module) Bytes() []byte {
	out := []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}
	// One type per import and per function (duplicates are legal).
	var types []byte
	n := 0
	for _, im := range m.Imports {
		types = append(types, funcType(im.Params, im.Results)...)
		n++
	}
	for _, f := range m.Funcs {
		types = append(types, funcType(f.Params, f.Results)...)
		n++
	}
	out = section(out, 1, append(Uleb(nil, uint64(n)), types...))
	if len(m.Imports) > 0 {
		b := Uleb(nil, uint64(len(m.Imports)))
		for i, im := range m.Imports {
			b = str(b, im.Module)
			b = str(b, im.Name)
			b = append(b, 0x00)
			b = Uleb(b, uint64(i))
		}
		out = section(out, 2, b)
	}
	b := Uleb(nil, uint64(len(m.Funcs)))
	for i := range m.Funcs {
		b = Uleb(b, uint64(len(m.Imports)+i))
	}
	out = section(out, 3, b)
	out = section(out, 5, Uleb([]byte{0x01, 0x00}, uint64(m.MemoryPages)))
	var exports []byte
	ne := 0
	for i, f := range m.Funcs {
		if f.Export != "" {
			exports = str(exports, f.Export)
			exports = append(exports, 0x00)
			exports = Uleb(exports, uint64(len(m.Imports)+i))
			ne++
		}
	}
	if m.MemoryExport != "" {
		exports = str(exports, m.MemoryExport)
		exports = append(exports, 0x02, 0x00)
		ne++
	}
	out = section(out, 7, append(Uleb(nil, uint64(ne)), exports...))
	code := Uleb(nil, uint64(len(m.Funcs)))
	for _, f := range m.Funcs {
		body := append([]byte{0x00}, f.Body...) // no locals
		body = append(body, OpEnd)
		code = Uleb(code, uint64(len(body)))
		code = append(code, body...)
	}
	out = section(out, 10, code)
	if len(m.Data) > 0 {
		d := Uleb(nil, uint64(len(m.Data)))
		for _, seg := range m.Data {
			d = append(d, 0x00)
			d = append(d, I32Const(int32(seg.Offset))...)
			d = append(d, OpEnd)
			d = Uleb(d, uint64(len(seg.Bytes)))
			d = append(d, seg.Bytes...)
		}
		out = section(out, 11, d)
	}
	return out
}
