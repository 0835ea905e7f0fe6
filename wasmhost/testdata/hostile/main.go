//go:build wasip1

// Command hostile is a misbehaving policy the wasmhost tests build: its
// batching hook does what the input's model name says.
package main

import (
	"math/rand/v2"
	"time"

	"github.com/kiln-project/kiln/policies/builtin"
	"github.com/kiln-project/kiln/policies/sdk"
)

var hoard [][]byte

//go:wasmexport kiln_batching
func batching(ptr, n int32) int64 { return sdk.Batching(ptr, n, decide) }

func decide(in *sdk.BatchingInput) (sdk.BatchingOutput, error) {
	switch in.Model {
	case "panic":
		panic("boom")
	case "exit":
		procExit(3)
	case "oom":
		for {
			hoard = append(hoard, make([]byte, 1<<20))
		}
	case "loop":
		for i := 0; ; i++ {
			if i < 0 {
				break
			}
		}
	case "sleep":
		time.Sleep(time.Hour)
	case "clock":
		d := time.Now().UnixMicro() - in.NowUS
		if d < 1 {
			d = 1
		}
		return sdk.BatchingOutput{Wait: true, WaitUS: uint64(d)}, nil
	case "random":
		return sdk.BatchingOutput{Jobs: []uint32{uint32(rand.IntN(len(in.Jobs)))}}, nil
	case "log":
		for i := 0; i < 100; i++ {
			sdk.Log(0, "decision log line")
		}
		sdk.Count("decisions", 1)
		println("to stderr")
	case "bad-index":
		return sdk.BatchingOutput{Jobs: []uint32{uint32(len(in.Jobs))}}, nil
	}
	return builtin.Batching(in), nil
}

// procExit is WASI's exit; the os package would import the filesystem
// functions the host refuses.
//
//go:wasmimport wasi_snapshot_preview1 proc_exit
func procExit(code int32)

func main() {}
