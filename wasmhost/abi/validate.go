package abi

import (
	"fmt"
	"math"
)

// InvalidError says why an answer was refused; the host falls back to its
// native default when it sees one.
type InvalidError struct {
	Hook   Hook
	Reason string
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("abi: invalid %s answer: %s", e.Hook, e.Reason)
}

func invalid(h Hook, format string, args ...any) error {
	return &InvalidError{Hook: h, Reason: fmt.Sprintf(format, args...)}
}

// CheckBatchingInput reports an input the host must not send.
func CheckBatchingInput(in *BatchingInput) error {
	if len(in.Jobs) == 0 {
		return fmt.Errorf("abi: batching input has no jobs")
	}
	if len(in.Jobs) > MaxJobs {
		return fmt.Errorf("abi: batching input has %d jobs, limit %d", len(in.Jobs), MaxJobs)
	}
	if in.MaxBatch == 0 {
		return fmt.Errorf("abi: batching input has max_batch 0")
	}
	return nil
}

// ValidateBatching checks out against in: a wait is within MaxWaitUS and
// names no jobs; a dispatch names at least one job, every index in range
// and at most once, one compatibility key, at most MaxBatch images, and no
// more memory than is free (when the input gives per-job memory).
func ValidateBatching(in *BatchingInput, out *BatchingOutput) error {
	if out.Wait {
		if len(out.Jobs) != 0 {
			return invalid(HookBatching, "a wait must not name jobs")
		}
		if out.WaitUS == 0 || out.WaitUS > MaxWaitUS {
			return invalid(HookBatching, "wait of %d µs is outside 1..%d", out.WaitUS, MaxWaitUS)
		}
		return nil
	}
	if len(out.Jobs) == 0 {
		return invalid(HookBatching, "a dispatch must name at least one job")
	}
	seen := make(map[uint32]bool, len(out.Jobs))
	var images uint64
	var mem uint64
	key := ""
	for i, idx := range out.Jobs {
		if int64(idx) >= int64(len(in.Jobs)) {
			return invalid(HookBatching, "job index %d out of range (%d jobs)", idx, len(in.Jobs))
		}
		if seen[idx] {
			return invalid(HookBatching, "job index %d named twice", idx)
		}
		seen[idx] = true
		j := &in.Jobs[idx]
		if i == 0 {
			key = j.CompatKey
		} else if j.CompatKey != key {
			return invalid(HookBatching, "jobs %d and %d have different compatibility keys", out.Jobs[0], idx)
		}
		n := uint64(j.N)
		if n == 0 {
			n = 1
		}
		images += n
		mem += j.MemBytes
	}
	if images > uint64(in.MaxBatch) && len(out.Jobs) > 1 {
		return invalid(HookBatching, "batch of %d images exceeds max_batch %d", images, in.MaxBatch)
	}
	if in.FreeMemBytes > 0 && mem > in.FreeMemBytes && len(out.Jobs) > 1 {
		return invalid(HookBatching, "batch needs %d bytes, %d free", mem, in.FreeMemBytes)
	}
	return nil
}

// CheckEvictionInput reports an input the host must not send.
func CheckEvictionInput(in *EvictionInput) error {
	if len(in.Models) > MaxModels {
		return fmt.Errorf("abi: eviction input has %d models, limit %d", len(in.Models), MaxModels)
	}
	return nil
}

// ValidateEviction checks out against in: indices in range and unique, no
// pinned or in-use model, offloads within the host's free memory, and
// enough bytes freed when the evictable models hold enough.
func ValidateEviction(in *EvictionInput, out *EvictionOutput) error {
	seen := make(map[uint32]bool, len(out.Victims))
	var freed, offloaded, evictable uint64
	for _, v := range out.Victims {
		if int64(v.Index) >= int64(len(in.Models)) {
			return invalid(HookEviction, "model index %d out of range (%d models)", v.Index, len(in.Models))
		}
		if seen[v.Index] {
			return invalid(HookEviction, "model index %d named twice", v.Index)
		}
		seen[v.Index] = true
		m := &in.Models[v.Index]
		if m.Pinned {
			return invalid(HookEviction, "model %q is pinned", m.ID)
		}
		if m.InUse {
			return invalid(HookEviction, "model %q is in use", m.ID)
		}
		freed += m.Bytes
		if v.Offload {
			offloaded += m.Bytes
		}
	}
	if offloaded > in.HostFreeBytes {
		return invalid(HookEviction, "offloading %d bytes, host has %d free", offloaded, in.HostFreeBytes)
	}
	for i := range in.Models {
		if !in.Models[i].Pinned && !in.Models[i].InUse {
			evictable += in.Models[i].Bytes
		}
	}
	if freed < in.NeededBytes && evictable >= in.NeededBytes {
		return invalid(HookEviction, "frees %d of the %d bytes needed though %d are evictable", freed, in.NeededBytes, evictable)
	}
	return nil
}

// CheckQualityInput reports an input the host must not send.
func CheckQualityInput(in *QualityInput) error {
	l := &in.Limits
	if l.MinSteps > l.MaxSteps || l.MinWidth > l.MaxWidth || l.MinHeight > l.MaxHeight {
		return fmt.Errorf("abi: quality limits are empty ranges")
	}
	if l.SizeMultiple == 0 {
		return fmt.Errorf("abi: quality limits: size_multiple is 0")
	}
	if math.IsNaN(in.Level) || in.Level < 0 || in.Level > 1 {
		return fmt.Errorf("abi: quality level %v outside 0..1", in.Level)
	}
	return nil
}

func allowed(v, requested string, list []string) bool {
	if v == requested {
		return true
	}
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

// ValidateQuality checks out against in: steps, width and height within
// the tenant's limits, sizes multiples of SizeMultiple, sampler and profile
// the requested ones or allowed ones, and a level in 0..1.
func ValidateQuality(in *QualityInput, out *QualityOutput) error {
	l, p := &in.Limits, &out.Params
	if p.Steps < l.MinSteps || p.Steps > l.MaxSteps {
		return invalid(HookQuality, "steps %d outside %d..%d", p.Steps, l.MinSteps, l.MaxSteps)
	}
	if p.Width < l.MinWidth || p.Width > l.MaxWidth {
		return invalid(HookQuality, "width %d outside %d..%d", p.Width, l.MinWidth, l.MaxWidth)
	}
	if p.Height < l.MinHeight || p.Height > l.MaxHeight {
		return invalid(HookQuality, "height %d outside %d..%d", p.Height, l.MinHeight, l.MaxHeight)
	}
	if l.SizeMultiple > 0 && (p.Width%l.SizeMultiple != 0 || p.Height%l.SizeMultiple != 0) {
		return invalid(HookQuality, "size %d×%d is not a multiple of %d", p.Width, p.Height, l.SizeMultiple)
	}
	if !allowed(p.Sampler, in.Request.Sampler, l.Samplers) {
		return invalid(HookQuality, "sampler %q is not allowed", p.Sampler)
	}
	if !allowed(p.Profile, in.Request.Profile, l.Profiles) {
		return invalid(HookQuality, "profile %q is not allowed", p.Profile)
	}
	if math.IsNaN(out.Level) || out.Level < 0 || out.Level > 1 {
		return invalid(HookQuality, "level %v outside 0..1", out.Level)
	}
	return nil
}

// ValidatePre checks a pre-node answer: a rejection has a reason; a
// rewrite keeps sizes and steps within the ABI's limits (the gateway then
// applies the tenant's own quotas to the rewritten request).
func ValidatePre(out *PreOutput) error {
	if out.Reject {
		if out.Reason == "" {
			return invalid(HookNodePre, "a rejection must give a reason")
		}
		return nil
	}
	if out.Width == 0 || out.Height == 0 || out.Width > MaxImageSide || out.Height > MaxImageSide {
		return invalid(HookNodePre, "size %d×%d outside 1..%d", out.Width, out.Height, MaxImageSide)
	}
	if out.Width%8 != 0 || out.Height%8 != 0 {
		return invalid(HookNodePre, "size %d×%d is not a multiple of 8", out.Width, out.Height)
	}
	if out.Steps == 0 || out.Steps > MaxSteps {
		return invalid(HookNodePre, "steps %d outside 1..%d", out.Steps, MaxSteps)
	}
	if out.Guidance < 0 || out.Guidance > 100 {
		return invalid(HookNodePre, "guidance %v outside 0..100", out.Guidance)
	}
	if out.Prompt == "" {
		return invalid(HookNodePre, "empty prompt")
	}
	return nil
}

// ValidatePost checks a post-node answer: a rejection has a reason; an
// image is within the limits and at most maxPixels pixels (0 = the ABI's
// limit).
func ValidatePost(out *PostOutput, maxPixels uint64) error {
	if out.Reject {
		if out.Reason == "" {
			return invalid(HookNodePost, "a rejection must give a reason")
		}
		return nil
	}
	if err := out.Image.Check(); err != nil {
		return invalid(HookNodePost, "%v", err)
	}
	if maxPixels > 0 && uint64(out.Image.Width)*uint64(out.Image.Height) > maxPixels {
		return invalid(HookNodePost, "image %d×%d exceeds %d pixels", out.Image.Width, out.Image.Height, maxPixels)
	}
	return nil
}
