package wasmbuild

import "github.com/kiln-project/kiln/wasmhost/abi"

// FirstJob is a hand-assembled batching policy that always dispatches job
// 0: its conformance dry run is instant even on a loaded test machine.
func FirstJob() []byte {
	out := []byte{abi.StatusOK, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}
	return (&Module{MemoryPages: 4, MemoryExport: abi.ExportMemory, Data: []Data{{Offset: 200000, Bytes: out}}, Funcs: []Func{
		{Results: []byte{I32}, Body: I32Const(1), Export: abi.ExportVersion},
		{Params: []byte{I32}, Results: []byte{I32}, Body: I32Const(1024), Export: abi.ExportAlloc},
		{Params: []byte{I32, I32}, Results: []byte{I64}, Body: I64Const(int64(uint64(200000)<<32 | uint64(len(out)))), Export: abi.HookBatching.Export()},
	}}).Bytes()
}
