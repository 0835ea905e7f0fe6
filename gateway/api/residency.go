package api

import (
	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/server/events"
)

// residency is where one worker holds a model, as /v1/models shows it.
type residency struct {
	Worker string `json:"worker"`
	Device string `json:"device"`
	// Tier is "gpu" or "host" (pinned host memory, back by a copy).
	Tier string `json:"tier"`
	// Bytes is the model's weights; UniqueBytes what it alone holds there.
	Bytes       int64 `json:"bytes"`
	UniqueBytes int64 `json:"unique_bytes"`
	// Shared lists components held once for this model and others.
	Shared []memory.SharedComponent `json:"shared,omitempty"`
}

// workerMemory sums one worker's model memory per tier, components shared
// by content hash counted once, and what sharing saves.
type workerMemory struct {
	Worker     string `json:"worker"`
	Device     string `json:"device"`
	GPUBytes   int64  `json:"gpu_bytes"`
	HostBytes  int64  `json:"host_bytes"`
	SavedBytes int64  `json:"saved_bytes"`
}

// residencies reads the workers' heartbeats: per model where it is, and
// per worker the memory totals.
func residencies(ws []events.Heartbeat) (map[string][]residency, []workerMemory) {
	byModel := map[string][]residency{}
	var totals []workerMemory
	for _, w := range ws {
		if len(w.Memory) == 0 {
			continue
		}
		tm := workerMemory{Worker: w.Worker, Device: w.Device}
		held := map[string]int64{}    // hash → bytes, once
		tierOf := map[string]string{} // hash → highest tier holding it
		var sum int64
		for _, u := range w.Memory {
			byModel[u.Model] = append(byModel[u.Model], residency{Worker: w.Worker, Device: w.Device, Tier: u.TierName,
				Bytes: u.Bytes, UniqueBytes: u.Unique, Shared: u.Shared})
			for _, c := range u.Components {
				sum += c.Bytes
				held[c.Hash] = max(held[c.Hash], c.Bytes)
				if tierOf[c.Hash] != "gpu" {
					tierOf[c.Hash] = u.TierName
				}
			}
		}
		var once int64
		for h, n := range held {
			once += n
			if tierOf[h] == "gpu" {
				tm.GPUBytes += n
			} else {
				tm.HostBytes += n
			}
		}
		tm.SavedBytes = sum - once
		totals = append(totals, tm)
	}
	return byModel, totals
}
