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
//
// With the memory manager's figures (ABI minor 3, in.Tiers): models with
// queued jobs go last, a victim frees only its unique bytes (components it
// shares with resident models stay), and a victim is offloaded, when it
// fits, if it has queued jobs or was used more than once and coming back
// from host memory is cheaper than loading it (a measured restore under a
// quarter of its load time, or a load of at least OffloadMinLoadUS).
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
	frees := func(m *abi.Model) uint64 {
		if in.Tiers {
			return m.UniqueBytes
		}
		return m.Bytes
	}
	sort.SliceStable(cand, func(a, b int) bool {
		ma, mb := &in.Models[cand[a]], &in.Models[cand[b]]
		if in.Tiers && (ma.Queued == 0) != (mb.Queued == 0) {
			return ma.Queued == 0
		}
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
		freed += frees(&in.Models[i])
	}
	// Give back victims the others cover, smallest first.
	bySize := append([]int(nil), victims...)
	sort.SliceStable(bySize, func(a, b int) bool {
		return frees(&in.Models[bySize[a]]) < frees(&in.Models[bySize[b]])
	})
	keep := map[int]bool{}
	for _, i := range bySize {
		if b := frees(&in.Models[i]); freed-b >= in.NeededBytes {
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
		if in.Tiers {
			cheaper := m.LoadUS >= OffloadMinLoadUS || (m.RestoreUS > 0 && 4*m.RestoreUS < m.LoadUS)
			off = (m.Queued > 0 || m.Uses > 1) && cheaper && m.Bytes <= hostFree
		}
		if off {
			hostFree -= m.Bytes
		}
		out.Victims = append(out.Victims, abi.Victim{Index: uint32(i), Offload: off})
	}
	return out
}
