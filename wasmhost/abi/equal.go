package abi

import "sort"

// SameBatching reports whether two batching answers agree: both wait
// (for any duration), or both dispatch the same set of jobs.
func SameBatching(a, b *BatchingOutput) bool {
	if a.Wait || b.Wait {
		return a.Wait == b.Wait
	}
	return sameSet(a.Jobs, b.Jobs)
}

func sameSet(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	x := append([]uint32(nil), a...)
	y := append([]uint32(nil), b...)
	sort.Slice(x, func(i, j int) bool { return x[i] < x[j] })
	sort.Slice(y, func(i, j int) bool { return y[i] < y[j] })
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

// SameEviction reports whether two eviction answers evict the same models
// with the same actions (in any order).
func SameEviction(a, b *EvictionOutput) bool {
	if len(a.Victims) != len(b.Victims) {
		return false
	}
	m := make(map[uint32]bool, len(a.Victims))
	for _, v := range a.Victims {
		m[v.Index] = v.Offload
	}
	for _, v := range b.Victims {
		off, ok := m[v.Index]
		if !ok || off != v.Offload {
			return false
		}
	}
	return true
}

// SameQuality reports whether two quality answers set the same parameters.
func SameQuality(a, b *QualityOutput) bool {
	return a.Params == b.Params
}
