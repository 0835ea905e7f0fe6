package builtin

import (
	"fmt"
	"testing"

	"github.com/kiln-project/kiln/wasmhost/abi"
)

// With the memory manager's figures (minor 3) the policy spares models
// with queued jobs, counts only unique bytes as freed and offloads models
// whose restore is cheap.
func TestEvictionUsesTierInformation(t *testing.T) {
	in := &abi.EvictionInput{NowUS: now, NeededBytes: 2 << 30, HostFreeBytes: 8 << 30, Tiers: true, HostBudgetBytes: 8 << 30,
		Models: []abi.Model{model("queued-old", 4, 100), model("ft1", 3, 200), model("ft2", 3, 300)}}
	for i := range in.Models {
		in.Models[i].UniqueBytes = in.Models[i].Bytes
	}
	in.Models[0].Queued = 2
	// ft1 and ft2 share 2 GiB (VAE and text encoder): each frees 1 GiB.
	in.Models[1].UniqueBytes, in.Models[2].UniqueBytes = 1<<30, 1<<30
	// queued-old is the least recently used but has queued jobs: it goes
	// last, so ft1 and ft2 go, each freeing only its own gigabyte.
	if got := evict(t, in); fmt.Sprint(got) != "[ft1:drop ft2:drop]" {
		t.Fatalf("got %v", got)
	}
	// A reused model whose measured restore is much cheaper than its load
	// (a quick load, under OffloadMinLoadUS) is offloaded; one used once is
	// not.
	in.Models[1].RestoreUS, in.Models[1].Uses = 40_000, 2
	in.Models[2].RestoreUS = 40_000
	if got := evict(t, in); fmt.Sprint(got) != "[ft1:offload ft2:drop]" {
		t.Fatalf("got %v", got)
	}
	// Without minor-3 figures the same models are judged by Bytes and
	// recency alone.
	in.Tiers = false
	if got := evict(t, in); fmt.Sprint(got) != "[queued-old:drop]" {
		t.Fatalf("without tiers: got %v", got)
	}
}
