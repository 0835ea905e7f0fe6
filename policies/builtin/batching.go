package builtin

import (
	"slices"
	"sort"

	"github.com/kiln-project/kiln/wasmhost/abi"
)

// DefaultMaxWaitUS is the batching wait bound used when the input gives none.
const DefaultMaxWaitUS = 200_000

// minGain is the smallest relative drop in per-image step latency that
// makes waiting for one more image worthwhile.
const minGain = 0.10

// Batching chooses the next batch from the queue:
//
//   - the head job is the one with the highest priority; among equal
//     priorities the one whose tenant has the lowest served/weight ratio
//     (weighted fairness), then the earliest arrival (first come, first
//     served), then the lowest index;
//   - the batch takes jobs with the head's compatibility key, picking each
//     time the tenant with the lowest ratio counting the images already
//     taken, while they fit in max_batch images and in free memory;
//   - the batch is dispatched now when it is full, when any queued job
//     has waited max_wait, when one of its jobs would miss its deadline
//     by waiting, or when the measured step latencies show that one more
//     image would not lower the per-image cost by 10%; otherwise the
//     policy waits until the oldest job in the batch reaches max_wait (or
//     a deadline's slack ends).
//
// With a running batch in the input (ABI minor 1) it answers which jobs
// join it now: jobs of any compatibility key in the same order (priority,
// fairness, arrival) while the running images plus theirs fit in
// max_batch and, when the activation bytes per image are known, in free
// memory; none joining is a wait.
func Batching(in *abi.BatchingInput) abi.BatchingOutput {
	if len(in.Jobs) == 0 {
		return abi.BatchingOutput{Wait: true, WaitUS: waitBound(in)}
	}
	maxBatch := uint64(in.MaxBatch)
	if maxBatch == 0 {
		maxBatch = 1
	}
	// Tenants by index, with their weights and served images. (Written
	// for the Wasm build too: slices and precomputed keys instead of maps
	// and closures keep the guest fast.)
	tenantOf := make([]int, len(in.Jobs))
	var ts []tenantState
	for i := range in.Jobs {
		t := in.Jobs[i].Tenant
		k := -1
		for x := range ts {
			if ts[x].name == t {
				k = x
				break
			}
		}
		if k < 0 {
			k = len(ts)
			ts = append(ts, tenantState{name: t, weight: 1})
			for _, sh := range in.Tenants {
				if sh.Tenant == t {
					if sh.Weight > 0 {
						ts[k].weight = sh.Weight
					}
					if sh.Served > 0 {
						ts[k].served = sh.Served
					}
					break
				}
			}
		}
		tenantOf[i] = k
	}
	order := make([]int, len(in.Jobs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return compareJobs(in, ts, tenantOf, a, b)
	})
	head := &in.Jobs[order[0]]

	// Per-tenant queues of compatible jobs; order already sorts them by
	// priority, arrival and index within a tenant.
	// Admission to a running batch (ABI minor 1): every offered job may
	// join, the running images count against max_batch and, with the
	// measured activation bytes per image, against free memory.
	admitting := len(in.Running) > 0
	queues := make([][]int, len(ts))
	for _, i := range order {
		if admitting || in.Jobs[i].CompatKey == head.CompatKey {
			queues[tenantOf[i]] = append(queues[tenantOf[i]], i)
		}
	}

	var batch []uint32
	var images, mem uint64
	for _, r := range in.Running {
		images += imagesOf(&abi.Job{N: r.N})
	}
	full := false
	for {
		// The next job: the best of the tenants' heads, counting what this
		// batch already gives each tenant.
		best := -1
		for t := range queues {
			if len(queues[t]) == 0 {
				continue
			}
			if best < 0 || compareJobs(in, ts, tenantOf, queues[t][0], queues[best][0]) < 0 {
				best = t
			}
		}
		if best < 0 {
			break
		}
		idx := queues[best][0]
		j := &in.Jobs[idx]
		n := imagesOf(j)
		fits := images+n <= maxBatch && (in.FreeMemBytes == 0 || mem+j.MemBytes <= in.FreeMemBytes)
		if admitting && in.ImageMemBytes > 0 && in.FreeMemBytes > 0 {
			fits = images+n <= maxBatch && (images+n)*in.ImageMemBytes <= in.FreeMemBytes
		}
		if (len(batch) > 0 || admitting) && !fits {
			full = true
			break
		}
		// The head batch always holds its first job, even when oversized.
		batch = append(batch, uint32(idx))
		images += n
		mem += j.MemBytes
		ts[best].taken += float64(n)
		queues[best] = queues[best][1:]
		if images >= maxBatch {
			full = true
			break
		}
	}

	if admitting {
		if len(batch) == 0 {
			return abi.BatchingOutput{Wait: true, WaitUS: waitBound(in)}
		}
		return abi.BatchingOutput{Jobs: batch}
	}
	if full {
		return abi.BatchingOutput{Jobs: batch}
	}
	maxWait := waitBound(in)
	var oldest int64 = in.NowUS
	deadlineSlack := int64(-1)
	steps := uint64(0)
	for _, i := range batch {
		j := &in.Jobs[i]
		if j.ArrivalUS < oldest {
			oldest = j.ArrivalUS
		}
		if uint64(j.Steps) > steps {
			steps = uint64(j.Steps)
		}
	}
	runUS := int64(steps) * int64(latencyAt(in.StepLatency, images+1))
	for _, i := range batch {
		j := &in.Jobs[i]
		if j.DeadlineUS > 0 {
			slack := j.DeadlineUS - in.NowUS - runUS
			if deadlineSlack < 0 || slack < deadlineSlack {
				deadlineSlack = slack
				if slack < 0 {
					deadlineSlack = 0
				}
			}
		}
	}
	waited := in.NowUS - oldest
	if waited < 0 {
		waited = 0
	}
	if overdue(in, maxWait) || uint64(waited) >= maxWait || deadlineSlack == 0 || !worthWaiting(in.StepLatency, images) {
		return abi.BatchingOutput{Jobs: batch}
	}
	wait := maxWait - uint64(waited)
	if deadlineSlack > 0 && uint64(deadlineSlack) < wait {
		wait = uint64(deadlineSlack)
	}
	return abi.BatchingOutput{Wait: true, WaitUS: wait}
}

type tenantState struct {
	name           string
	weight, served float64
	taken          float64 // images given to the tenant in the batch being built
}

// ratio is the tenant's served images (plus those taken in this batch)
// per unit of weight.
func (t *tenantState) ratio() float64 { return (t.served + t.taken) / t.weight }

// compareJobs orders job a ahead of job b (negative result): higher
// priority, then the lower served/weight ratio of its tenant, then the
// earlier arrival, then the lower index.
func compareJobs(in *abi.BatchingInput, ts []tenantState, tenantOf []int, a, b int) int {
	ja, jb := &in.Jobs[a], &in.Jobs[b]
	if ja.Priority != jb.Priority {
		if ja.Priority > jb.Priority {
			return -1
		}
		return 1
	}
	if ta, tb := tenantOf[a], tenantOf[b]; ta != tb {
		if ra, rb := ts[ta].ratio(), ts[tb].ratio(); ra != rb {
			if ra < rb {
				return -1
			}
			return 1
		}
	}
	if ja.ArrivalUS != jb.ArrivalUS {
		if ja.ArrivalUS < jb.ArrivalUS {
			return -1
		}
		return 1
	}
	return a - b
}

// overdue reports whether any queued job has waited maxWait; the policy
// then never waits, so the queue keeps moving.
func overdue(in *abi.BatchingInput, maxWait uint64) bool {
	for i := range in.Jobs {
		if w := in.NowUS - in.Jobs[i].ArrivalUS; w > 0 && uint64(w) >= maxWait {
			return true
		}
	}
	return false
}

func waitBound(in *abi.BatchingInput) uint64 {
	w := in.MaxWaitUS
	if w == 0 {
		w = DefaultMaxWaitUS
	}
	if w > abi.MaxWaitUS {
		w = abi.MaxWaitUS
	}
	return w
}

func imagesOf(j *abi.Job) uint64 {
	if j.N == 0 {
		return 1
	}
	return uint64(j.N)
}

// latencyAt interpolates the step latency (µs) at batch size b from the
// measurements, extrapolating linearly past the ends; 0 when unknown.
func latencyAt(ls []abi.StepLatency, b uint64) float64 {
	pts := make([]abi.StepLatency, 0, len(ls))
	for _, l := range ls {
		if l.Batch > 0 && l.LatencyUS > 0 {
			pts = append(pts, l)
		}
	}
	if len(pts) == 0 {
		return 0
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].Batch < pts[j].Batch })
	if len(pts) == 1 {
		return float64(pts[0].LatencyUS) * float64(b) / float64(pts[0].Batch)
	}
	lo, hi := pts[0], pts[1]
	for k := 1; k < len(pts); k++ {
		lo, hi = pts[k-1], pts[k]
		if uint64(pts[k].Batch) >= b {
			break
		}
	}
	if hi.Batch == lo.Batch {
		return float64(hi.LatencyUS)
	}
	slope := (float64(hi.LatencyUS) - float64(lo.LatencyUS)) / float64(hi.Batch-lo.Batch)
	v := float64(lo.LatencyUS) + slope*(float64(b)-float64(lo.Batch))
	if v < 1 {
		v = 1
	}
	return v
}

// worthWaiting reports whether adding one image to a batch of b lowers
// the per-image step latency by at least minGain. Without measurements it
// assumes batching pays (the GPU case) and lets max_wait bound the wait.
func worthWaiting(ls []abi.StepLatency, b uint64) bool {
	if b == 0 {
		return true
	}
	cur, next := latencyAt(ls, b), latencyAt(ls, b+1)
	if cur == 0 || next == 0 {
		return true
	}
	perCur, perNext := cur/float64(b), next/float64(b+1)
	return perNext <= perCur*(1-minGain)
}
