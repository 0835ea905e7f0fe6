//go:build wasip1

// Command fifo is an example batching policy: strictly first come, first
// served, never waiting. It takes the oldest job and every later job with
// the same compatibility key while they fit in max_batch images and in
// the free memory.
//
// Build it with:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o fifo.wasm ./policies/examples/fifo
//	kiln policy test fifo.wasm
package main

import (
	"cmp"
	"slices"

	"github.com/kiln-project/kiln/policies/sdk"
)

//go:wasmexport kiln_batching
func batching(ptr, n int32) int64 { return sdk.Batching(ptr, n, decide) }

func decide(in *sdk.BatchingInput) (sdk.BatchingOutput, error) {
	order := make([]int, len(in.Jobs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(in.Jobs[a].ArrivalUS, in.Jobs[b].ArrivalUS) })
	head := in.Jobs[order[0]]
	out := sdk.BatchingOutput{}
	images, mem := uint32(0), uint64(0)
	for _, i := range order {
		j := in.Jobs[i]
		n := max(j.N, 1)
		fits := images+n <= in.MaxBatch && (in.FreeMemBytes == 0 || mem+j.MemBytes <= in.FreeMemBytes)
		if j.CompatKey != head.CompatKey || (len(out.Jobs) > 0 && !fits) {
			continue
		}
		out.Jobs = append(out.Jobs, uint32(i))
		images, mem = images+n, mem+j.MemBytes
	}
	sdk.Count("batches", 1)
	return out, nil
}

func main() {}
