package builtin

import (
	"sort"

	"github.com/kiln-project/kiln/wasmhost/abi"
)

// OffloadMinLoadUS is the load time above which an evicted model that was
// used more than once is offloaded to host memory instead of dropped.
const OffloadMinLoadUS = 1_000_000

// Eviction is a size-aware LRU: it walks the models that are neither
// pinned nor in use from the least recently used (ties: larger first),
// taking victims until NeededBytes are freed, then gives back every
// victim that the others cover without it, smallest first, so that one
// large stale model goes instead of several small ones. A victim is
// offloaded to host memory when it was used more than once, took at
// least OffloadMinLoadUS to load and fits in the host's free memory;
// otherwise it is dropped.
func Eviction(in *abi.EvictionInput) abi.EvictionOutput {
	if in.NeededBytes == 0 {
		return abi.EvictionOutput{}
	}
	var cand []int
	for i := range in.Models {
		if !in.Models[i].Pinned && !in.Models[i].InUse {
			cand = append(cand, i)
		}
	}
	sort.SliceStable(cand, func(a, b int) bool {
		ma, mb := &in.Models[cand[a]], &in.Models[cand[b]]
		if ma.LastUseUS != mb.LastUseUS {
			return ma.LastUseUS < mb.LastUseUS
		}
		if ma.Bytes != mb.Bytes {
			return ma.Bytes > mb.Bytes
		}
		return cand[a] < cand[b]
	})
	var victims []int
	var freed uint64
	for _, i := range cand {
		if freed >= in.NeededBytes {
			break
		}
		victims = append(victims, i)
		freed += in.Models[i].Bytes
	}
	// Give back victims the others cover, smallest first.
	bySize := append([]int(nil), victims...)
	sort.SliceStable(bySize, func(a, b int) bool {
		return in.Models[bySize[a]].Bytes < in.Models[bySize[b]].Bytes
	})
	keep := map[int]bool{}
	for _, i := range bySize {
		if b := in.Models[i].Bytes; freed-b >= in.NeededBytes {
			freed -= b
			keep[i] = true
		}
	}
	out := abi.EvictionOutput{}
	hostFree := in.HostFreeBytes
	for _, i := range victims {
		if keep[i] {
			continue
		}
		m := &in.Models[i]
		off := m.Uses > 1 && m.LoadUS >= OffloadMinLoadUS && m.Bytes <= hostFree
		if off {
			hostFree -= m.Bytes
		}
		out.Victims = append(out.Victims, abi.Victim{Index: uint32(i), Offload: off})
	}
	return out
}
