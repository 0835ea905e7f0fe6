package abi

import (
	"errors"
	"math"
)

// InvalidError says why an answer was refused; the host falls back to its
// native default when it sees one.
type InvalidError struct {
	Hook   Hook
	Reason string
}

// Error names the hook and why its answer is invalid.
func (e *InvalidError) Error() string {
	return "abi: invalid " + string(e.Hook) + " answer: " + e.Reason
}

func invalid(h Hook, reason string) error {
	return &InvalidError{Hook: h, Reason: reason}
}

// CheckBatchingInput reports an input the host must not send.
func CheckBatchingInput(in *BatchingInput) error {
	if len(in.Jobs) == 0 {
		return errors.New("abi: batching input has no jobs")
	}
	if len(in.Jobs) > MaxJobs {
		return errors.New("abi: batching input has " + itoa(int64(len(in.Jobs))) + " jobs, limit " + itoa(MaxJobs))
	}
	if len(in.Running) > MaxJobs {
		return errors.New("abi: batching input has " + itoa(int64(len(in.Running))) + " running jobs, limit " + itoa(MaxJobs))
	}
	if in.MaxBatch == 0 {
		return errors.New("abi: batching input has max_batch 0")
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
			return invalid(HookBatching, "wait of "+utoa(out.WaitUS)+" µs is outside 1.."+itoa(MaxWaitUS))
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
			return invalid(HookBatching, "job index "+utoa(uint64(idx))+" out of range ("+itoa(int64(len(in.Jobs)))+" jobs)")
		}
		if seen[idx] {
			return invalid(HookBatching, "job index "+utoa(uint64(idx))+" named twice")
		}
		seen[idx] = true
		j := &in.Jobs[idx]
		if i == 0 {
			key = j.CompatKey
		} else if j.CompatKey != key && len(in.Running) == 0 {
			return invalid(HookBatching, "jobs "+utoa(uint64(out.Jobs[0]))+" and "+utoa(uint64(idx))+" have different compatibility keys")
		}
		n := uint64(j.N)
		if n == 0 {
			n = 1
		}
		images += n
		mem += j.MemBytes
	}
	if len(in.Running) > 0 { // joining a running batch: its images count too
		running := uint64(0)
		for _, r := range in.Running {
			running += uint64(max(r.N, 1))
		}
		if running+images > uint64(in.MaxBatch) {
			return invalid(HookBatching, "joining makes a running batch of "+utoa(running+images)+" images, max_batch "+utoa(uint64(in.MaxBatch)))
		}
		if in.ImageMemBytes > 0 && in.FreeMemBytes > 0 && (running+images)*in.ImageMemBytes > in.FreeMemBytes {
			return invalid(HookBatching, "joining needs "+utoa((running+images)*in.ImageMemBytes)+" bytes of activations, "+utoa(in.FreeMemBytes)+" free")
		}
		return nil
	}
	if images > uint64(in.MaxBatch) && len(out.Jobs) > 1 {
		return invalid(HookBatching, "batch of "+utoa(images)+" images exceeds max_batch "+utoa(uint64(in.MaxBatch)))
	}
	if in.FreeMemBytes > 0 && mem > in.FreeMemBytes && len(out.Jobs) > 1 {
		return invalid(HookBatching, "batch needs "+utoa(mem)+" bytes, "+utoa(in.FreeMemBytes)+" free")
	}
	return nil
}

// CheckEvictionInput reports an input the host must not send.
func CheckEvictionInput(in *EvictionInput) error {
	if len(in.Models) > MaxModels {
		return errors.New("abi: eviction input has " + itoa(int64(len(in.Models))) + " models, limit " + itoa(MaxModels))
	}
	if in.Tiers {
		for i := range in.Models {
			if m := &in.Models[i]; m.UniqueBytes > m.Bytes {
				return errors.New("abi: model " + quote(m.ID) + " has more unique bytes than bytes")
			}
		}
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
			return invalid(HookEviction, "model index "+utoa(uint64(v.Index))+" out of range ("+itoa(int64(len(in.Models)))+" models)")
		}
		if seen[v.Index] {
			return invalid(HookEviction, "model index "+utoa(uint64(v.Index))+" named twice")
		}
		seen[v.Index] = true
		m := &in.Models[v.Index]
		if m.Pinned {
			return invalid(HookEviction, "model "+quote(m.ID)+" is pinned")
		}
		if m.InUse {
			return invalid(HookEviction, "model "+quote(m.ID)+" is in use")
		}
		freed += m.Bytes
		if v.Offload {
			offloaded += m.Bytes
		}
	}
	if offloaded > in.HostFreeBytes {
		return invalid(HookEviction, "offloading "+utoa(offloaded)+" bytes, host has "+utoa(in.HostFreeBytes)+" free")
	}
	for i := range in.Models {
		if !in.Models[i].Pinned && !in.Models[i].InUse {
			evictable += in.Models[i].Bytes
		}
	}
	if freed < in.NeededBytes && evictable >= in.NeededBytes {
		return invalid(HookEviction, "frees "+utoa(freed)+" of the "+utoa(in.NeededBytes)+" bytes needed though "+utoa(evictable)+" are evictable")
	}
	return nil
}

// CheckQualityInput reports an input the host must not send.
func CheckQualityInput(in *QualityInput) error {
	l := &in.Limits
	if l.MinSteps > l.MaxSteps || l.MinWidth > l.MaxWidth || l.MinHeight > l.MaxHeight {
		return errors.New("abi: quality limits are empty ranges")
	}
	if l.SizeMultiple == 0 {
		return errors.New("abi: quality limits: size_multiple is 0")
	}
	if math.IsNaN(in.Level) || in.Level < 0 || in.Level > 1 {
		return errors.New("abi: quality level " + ftoa(in.Level) + " outside 0..1")
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

// RestoreLocked sets the parameters in.Locked names back to the request's
// values.
func RestoreLocked(in *QualityInput, out *QualityOutput) {
	r, p := &in.Request, &out.Params
	for _, f := range []struct {
		bit      uint32
		dst, src *uint32
	}{{LockSteps, &p.Steps, &r.Steps}, {LockWidth, &p.Width, &r.Width}, {LockHeight, &p.Height, &r.Height}} {
		if in.Locked&f.bit != 0 {
			*f.dst = *f.src
		}
	}
	if in.Locked&LockSampler != 0 {
		p.Sampler = r.Sampler
	}
	if in.Locked&LockProfile != 0 {
		p.Profile = r.Profile
	}
}

// ValidateQuality checks out against in: steps, width and height within
// the tenant's limits, sizes multiples of SizeMultiple, sampler and profile
// the requested ones or allowed ones, and a level in 0..1.
func ValidateQuality(in *QualityInput, out *QualityOutput) error {
	l, p := &in.Limits, &out.Params
	if p.Steps < l.MinSteps || p.Steps > l.MaxSteps {
		return invalid(HookQuality, "steps "+rng(p.Steps, l.MinSteps, l.MaxSteps))
	}
	if p.Width < l.MinWidth || p.Width > l.MaxWidth {
		return invalid(HookQuality, "width "+rng(p.Width, l.MinWidth, l.MaxWidth))
	}
	if p.Height < l.MinHeight || p.Height > l.MaxHeight {
		return invalid(HookQuality, "height "+rng(p.Height, l.MinHeight, l.MaxHeight))
	}
	if l.SizeMultiple > 0 && (p.Width%l.SizeMultiple != 0 || p.Height%l.SizeMultiple != 0) {
		return invalid(HookQuality, "size "+dims(p.Width, p.Height)+" is not a multiple of "+utoa(uint64(l.SizeMultiple)))
	}
	if !allowed(p.Sampler, in.Request.Sampler, l.Samplers) {
		return invalid(HookQuality, "sampler "+quote(p.Sampler)+" is not allowed")
	}
	if !allowed(p.Profile, in.Request.Profile, l.Profiles) {
		return invalid(HookQuality, "profile "+quote(p.Profile)+" is not allowed")
	}
	if math.IsNaN(out.Level) || out.Level < 0 || out.Level > 1 {
		return invalid(HookQuality, "level "+ftoa(out.Level)+" outside 0..1")
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
		return invalid(HookNodePre, "size "+dims(out.Width, out.Height)+" outside 1.."+itoa(MaxImageSide))
	}
	if out.Width%8 != 0 || out.Height%8 != 0 {
		return invalid(HookNodePre, "size "+dims(out.Width, out.Height)+" is not a multiple of 8")
	}
	if out.Steps == 0 || out.Steps > MaxSteps {
		return invalid(HookNodePre, "steps "+utoa(uint64(out.Steps))+" outside 1.."+itoa(MaxSteps))
	}
	if out.Guidance < 0 || out.Guidance > 100 {
		return invalid(HookNodePre, "guidance "+ftoa(out.Guidance)+" outside 0..100")
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
		return invalid(HookNodePost, err.Error())
	}
	if maxPixels > 0 && uint64(out.Image.Width)*uint64(out.Image.Height) > maxPixels {
		return invalid(HookNodePost, "image "+dims(out.Image.Width, out.Image.Height)+" exceeds "+utoa(maxPixels)+" pixels")
	}
	return nil
}

func rng(v, lo, hi uint32) string {
	return utoa(uint64(v)) + " outside " + utoa(uint64(lo)) + ".." + utoa(uint64(hi))
}
