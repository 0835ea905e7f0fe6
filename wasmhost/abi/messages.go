package abi

import "errors"

// Job is one queued job as a batching policy sees it.
type Job struct {
	ID         string `json:"id"`
	Tenant     string `json:"tenant"`
	Priority   int32  `json:"priority"`    // higher runs first
	ArrivalUS  int64  `json:"arrival_us"`  // Unix microseconds
	DeadlineUS int64  `json:"deadline_us"` // Unix microseconds; 0 = none
	Width      uint32 `json:"width"`
	Height     uint32 `json:"height"`
	N          uint32 `json:"n"` // images in the job
	Steps      uint32 `json:"steps"`
	Sampler    string `json:"sampler"`
	CompatKey  string `json:"compat_key"` // jobs batch together only with the same key
	MemBytes   uint64 `json:"mem_bytes"`  // estimated extra memory the job adds to a batch
}

// TenantShare is a tenant's fairness weight and recent usage.
type TenantShare struct {
	Tenant string  `json:"tenant"`
	Weight float64 `json:"weight"` // > 0; share of the GPU relative to others
	Served float64 `json:"served"` // images (or image-steps) served recently
}

// StepLatency is the measured latency of one sampler step at a batch size.
type StepLatency struct {
	Batch     uint32 `json:"batch"`
	LatencyUS uint32 `json:"latency_us"`
}

// BatchingInput asks which queued jobs to run now as one batch.
type BatchingInput struct {
	NowUS        int64         `json:"now_us"`
	Model        string        `json:"model"`
	CompatRules  []string      `json:"compat_rules"` // the request fields that form CompatKey
	MaxBatch     uint32        `json:"max_batch"`    // images per batch
	MaxWaitUS    uint64        `json:"max_wait_us"`  // the operator's bound on queueing for a batch
	FreeMemBytes uint64        `json:"free_mem_bytes"`
	StepLatency  []StepLatency `json:"step_latency"`
	Tenants      []TenantShare `json:"tenants"`
	Jobs         []Job         `json:"jobs"`

	// Minor 1 (continuous batching). When Running is not empty the input
	// asks which of Jobs join that batch, already running on the device,
	// at this step boundary (the host offers only jobs that may join:
	// the same model and image size); a dispatch names the joining jobs
	// (compatibility keys may differ), a wait lets none join now. The
	// batch's images plus the joining ones stay within MaxBatch and,
	// when ImageMemBytes is known, their activations within FreeMemBytes.
	Running []RunningJob `json:"running,omitempty"`
	// ImageMemBytes is the measured activation memory of one image at
	// this model and size (0: unknown).
	ImageMemBytes uint64 `json:"image_mem_bytes,omitempty"`
}

// RunningJob is a job in the running batch (minor 1).
type RunningJob struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	N      uint32 `json:"n"`
	// RemainingSteps is the number of steps it has left.
	RemainingSteps uint32 `json:"remaining_steps"`
}

// BatchingOutput dispatches Jobs (indices into the input's jobs) now as one
// batch, or, when Wait is set, asks to be asked again after WaitUS.
type BatchingOutput struct {
	Wait   bool     `json:"wait"`
	WaitUS uint64   `json:"wait_us"`
	Jobs   []uint32 `json:"jobs"`
}

// Model is one resident model as an eviction policy sees it.
type Model struct {
	ID        string `json:"id"`
	Bytes     uint64 `json:"bytes"`
	LastUseUS int64  `json:"last_use_us"`
	Uses      uint64 `json:"uses"`
	LoadUS    uint64 `json:"load_us"` // how long it took to load
	Pinned    bool   `json:"pinned"`
	InUse     bool   `json:"in_use"`
	// UniqueBytes (minor 3) is what evicting the model frees on the device:
	// Bytes less the components it shares with other resident models.
	UniqueBytes uint64 `json:"unique_bytes"`
	// OffloadUS and RestoreUS (minor 3) are its last offload to host memory
	// and restore from it (0: never measured).
	OffloadUS uint64 `json:"offload_us"`
	RestoreUS uint64 `json:"restore_us"`
	// Queued (minor 3) counts queued jobs for the model.
	Queued uint32 `json:"queued"`
}

// EvictionInput asks which models to evict to free NeededBytes.
type EvictionInput struct {
	NowUS         int64   `json:"now_us"`
	NeededBytes   uint64  `json:"needed_bytes"`
	BudgetBytes   uint64  `json:"budget_bytes"`
	UsedBytes     uint64  `json:"used_bytes"`
	HostFreeBytes uint64  `json:"host_free_bytes"` // room to offload models to host memory
	Models        []Model `json:"models"`
	// Tiers (minor 3) reports that the minor-3 fields below and in Models
	// are filled (by the host, or decoded from an input that carries them).
	Tiers bool `json:"tiers"`
	// HostBudgetBytes (minor 3) is the host memory offloaded models may
	// hold in all.
	HostBudgetBytes uint64 `json:"host_budget_bytes"`
}

// Victim evicts the model at Index, offloading it to host memory when
// Offload is set and dropping it otherwise.
type Victim struct {
	Index   uint32 `json:"index"`
	Offload bool   `json:"offload"`
}

// EvictionOutput is the ordered list of victims.
type EvictionOutput struct {
	Victims []Victim `json:"victims"`
}

// QualityParams are the request parameters a quality policy may adjust.
type QualityParams struct {
	Steps   uint32 `json:"steps"`
	Width   uint32 `json:"width"`
	Height  uint32 `json:"height"`
	Sampler string `json:"sampler"`
	Profile string `json:"profile"`
}

// QualityLimits are the ranges the tenant is allowed.
type QualityLimits struct {
	MinSteps     uint32   `json:"min_steps"`
	MaxSteps     uint32   `json:"max_steps"`
	MinWidth     uint32   `json:"min_width"`
	MaxWidth     uint32   `json:"max_width"`
	MinHeight    uint32   `json:"min_height"`
	MaxHeight    uint32   `json:"max_height"`
	SizeMultiple uint32   `json:"size_multiple"` // width and height must be multiples (≥ 1)
	Samplers     []string `json:"samplers"`      // allowed; empty = only the requested one
	Profiles     []string `json:"profiles"`      // allowed; empty = only the requested one
}

// QualityInput asks how to adjust one request given the load.
type QualityInput struct {
	NowUS       int64         `json:"now_us"`
	Tenant      string        `json:"tenant"`
	QueueDepth  uint32        `json:"queue_depth"`
	Running     uint32        `json:"running"`
	P50US       uint64        `json:"p50_us"`
	P95US       uint64        `json:"p95_us"`
	TargetP95US uint64        `json:"target_p95_us"`
	Level       float64       `json:"level"` // the controller state the policy answered last time, 0..1
	Request     QualityParams `json:"request"`
	Limits      QualityLimits `json:"limits"`
	// Locked (minor 2) lists the parameters the request set explicitly
	// and does not allow adjusting (LockSteps, ...): the policy must keep
	// them, and the host restores them if it does not.
	Locked uint32 `json:"locked"`
	// Model (minor 2) is the request's model; the host keeps the
	// controller state per (tenant, profile, model).
	Model string `json:"model"`
}

// Bits of QualityInput.Locked.
const (
	LockSteps uint32 = 1 << iota
	LockWidth
	LockHeight
	LockSampler
	LockProfile
)

// QualityOutput is the adjusted request and the new controller state.
type QualityOutput struct {
	Params QualityParams `json:"params"`
	Level  float64       `json:"level"`
	// Reason (minor 2) says why the request was adjusted, for the job's
	// record ("p95 12.1s over the 8s target").
	Reason string `json:"reason"`
}

// Param is one node parameter.
type Param struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// PreInput is a generation request before it is queued.
type PreInput struct {
	Node           string  `json:"node"` // the name the job used for this node
	Params         []Param `json:"params"`
	Tenant         string  `json:"tenant"`
	Model          string  `json:"model"`
	Prompt         string  `json:"prompt"`
	NegativePrompt string  `json:"negative_prompt"`
	Width          uint32  `json:"width"`
	Height         uint32  `json:"height"`
	Steps          uint32  `json:"steps"`
	Guidance       float64 `json:"guidance"`
	Sampler        string  `json:"sampler"`
	Seed           uint64  `json:"seed"`
}

// PreOutput rewrites the request, or rejects it with Reason.
type PreOutput struct {
	Reject         bool    `json:"reject"`
	Reason         string  `json:"reason,omitempty"`
	Prompt         string  `json:"prompt"`
	NegativePrompt string  `json:"negative_prompt"`
	Width          uint32  `json:"width"`
	Height         uint32  `json:"height"`
	Steps          uint32  `json:"steps"`
	Guidance       float64 `json:"guidance"`
	Sampler        string  `json:"sampler"`
	Seed           uint64  `json:"seed"`
}

// Image is 8-bit RGBA, non-premultiplied, rows top to bottom with no padding
// (stride = 4 × Width).
type Image struct {
	Width  uint32 `json:"width"`
	Height uint32 `json:"height"`
	Pix    []byte `json:"-"`
}

// PostInput is one generated image after decoding.
type PostInput struct {
	Node   string  `json:"node"`
	Params []Param `json:"params"`
	Tenant string  `json:"tenant"`
	Prompt string  `json:"prompt"`
	Seed   uint64  `json:"seed"`
	Image  Image   `json:"image"`
}

// PostOutput is the processed image, or a rejection with Reason.
type PostOutput struct {
	Reject bool   `json:"reject"`
	Reason string `json:"reason,omitempty"`
	Image  Image  `json:"image"`
}

// GuestError is the message of a StatusError output.
type GuestError struct{ Message string }

// Error returns the guest's message, marked as coming from the guest.
func (e *GuestError) Error() string { return "guest error: " + e.Message }

// ParamValue returns the value of key in ps and whether it is present.
func ParamValue(ps []Param, key string) (string, bool) {
	for _, p := range ps {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// EncodeError appends a StatusError output carrying msg (truncated to
// MaxReasonBytes).
func EncodeError(dst []byte, msg string) []byte {
	if len(msg) > MaxReasonBytes {
		msg = msg[:MaxReasonBytes]
	}
	e := NewEncoder(dst)
	e.U8(StatusError)
	e.Str(msg)
	return e.Bytes()
}

// status reads the status byte of an output and, for StatusError, returns
// the guest's message as a *GuestError.
func status(d *Decoder) error {
	switch s := d.U8(); {
	case d.Err() != nil:
		return d.Err()
	case s == StatusOK:
		return nil
	case s == StatusError:
		msg := d.Str("error message", MaxReasonBytes)
		d.End("error output")
		if d.Err() != nil {
			return d.Err()
		}
		return &GuestError{Message: msg}
	default:
		return errors.New("abi: unknown status byte " + itoa(int64(s)))
	}
}

func encStrings(e *Encoder, ss []string) {
	e.U32(uint32(len(ss)))
	for _, s := range ss {
		e.Str(s)
	}
}

func decStrings(d *Decoder, field string) []string { return decStringsInto(d, field, nil) }

func decStringsInto(d *Decoder, field string, dst []string) []string {
	n := d.Count(field, MaxListItems, 4)
	out := grow(dst, n)
	for i := range out {
		out[i] = d.Str(field, MaxStringBytes)
	}
	return out
}

func encParams(e *Encoder, ps []Param) {
	e.U32(uint32(len(ps)))
	for _, p := range ps {
		e.Str(p.Key)
		e.Str(p.Value)
	}
}

func decParams(d *Decoder) []Param {
	n := d.Count("params", MaxListItems, 8)
	if n == 0 {
		return nil
	}
	out := make([]Param, n)
	for i := range out {
		out[i].Key = d.Str("param key", MaxStringBytes)
		out[i].Value = d.Str("param value", MaxPromptBytes)
	}
	return out
}

// --- batching ---

// EncodeBatchingInput appends the encoding of in to dst[:0], with the
// fields of every minor version up to Minor.
func EncodeBatchingInput(dst []byte, in *BatchingInput) []byte {
	return EncodeBatchingInputAt(dst, in, Minor)
}

// EncodeBatchingInputAt appends the encoding of in for a module of
// minor version minor to dst[:0]: later minors' fields are left out.
func EncodeBatchingInputAt(dst []byte, in *BatchingInput, minor uint32) []byte {
	e := NewEncoder(dst)
	e.I64(in.NowUS)
	e.Str(in.Model)
	encStrings(e, in.CompatRules)
	e.U32(in.MaxBatch)
	e.U64(in.MaxWaitUS)
	e.U64(in.FreeMemBytes)
	e.U32(uint32(len(in.StepLatency)))
	for _, l := range in.StepLatency {
		e.U32(l.Batch)
		e.U32(l.LatencyUS)
	}
	e.U32(uint32(len(in.Tenants)))
	for _, t := range in.Tenants {
		e.Str(t.Tenant)
		e.F64(t.Weight)
		e.F64(t.Served)
	}
	e.U32(uint32(len(in.Jobs)))
	for i := range in.Jobs {
		j := &in.Jobs[i]
		e.Str(j.ID)
		e.Str(j.Tenant)
		e.I32(j.Priority)
		e.I64(j.ArrivalUS)
		e.I64(j.DeadlineUS)
		e.U32(j.Width)
		e.U32(j.Height)
		e.U32(j.N)
		e.U32(j.Steps)
		e.Str(j.Sampler)
		e.Str(j.CompatKey)
		e.U64(j.MemBytes)
	}
	if minor >= MinorBatching {
		e.U32(uint32(len(in.Running)))
		for _, r := range in.Running {
			e.Str(r.ID)
			e.Str(r.Tenant)
			e.U32(r.N)
			e.U32(r.RemainingSteps)
		}
		e.U64(in.ImageMemBytes)
	}
	return e.Bytes()
}

// DecodeBatchingInput decodes a batching input.
func DecodeBatchingInput(b []byte) (BatchingInput, error) {
	var in BatchingInput
	err := DecodeBatchingInputInto(b, &in, false)
	return in, err
}

// DecodeBatchingInputInto decodes a batching input into in, reusing its
// slices' memory; with alias set its strings share b's memory (see
// Decoder.Alias). Guest SDKs use it to avoid allocating on every call.
func DecodeBatchingInputInto(b []byte, in *BatchingInput, alias bool) error {
	d := NewDecoder(b)
	if alias {
		d.Alias()
	}
	in.NowUS = d.I64()
	in.Model = d.Str("model", MaxStringBytes)
	in.CompatRules = decStringsInto(d, "compat_rules", in.CompatRules[:0])
	in.MaxBatch = d.U32()
	in.MaxWaitUS = d.U64()
	in.FreeMemBytes = d.U64()
	n := d.Count("step_latency", MaxListItems, 8)
	in.StepLatency = grow(in.StepLatency, n)
	for i := range in.StepLatency {
		in.StepLatency[i] = StepLatency{Batch: d.U32(), LatencyUS: d.U32()}
	}
	n = d.Count("tenants", MaxListItems, 20)
	in.Tenants = grow(in.Tenants, n)
	for i := range in.Tenants {
		t := &in.Tenants[i]
		t.Tenant = d.Interned("tenant", MaxStringBytes)
		t.Weight = d.F64("tenant weight")
		t.Served = d.F64("tenant served")
	}
	n = d.Count("jobs", MaxJobs, 60)
	in.Jobs = grow(in.Jobs, n)
	for i := range in.Jobs {
		j := &in.Jobs[i]
		j.ID = d.Str("job id", MaxStringBytes)
		j.Tenant = d.Interned("job tenant", MaxStringBytes)
		j.Priority = d.I32()
		j.ArrivalUS = d.I64()
		j.DeadlineUS = d.I64()
		j.Width = d.U32()
		j.Height = d.U32()
		j.N = d.U32()
		j.Steps = d.U32()
		j.Sampler = d.Interned("job sampler", MaxStringBytes)
		j.CompatKey = d.Interned("job compat_key", MaxStringBytes)
		j.MemBytes = d.U64()
	}
	in.Running, in.ImageMemBytes = in.Running[:0], 0
	if d.Remaining() > 0 { // minor 1
		n = d.Count("running", MaxJobs, 16)
		in.Running = grow(in.Running, n)
		for i := range in.Running {
			r := &in.Running[i]
			r.ID = d.Str("running id", MaxStringBytes)
			r.Tenant = d.Interned("running tenant", MaxStringBytes)
			r.N = d.U32()
			r.RemainingSteps = d.U32()
		}
		in.ImageMemBytes = d.U64()
	}
	if len(in.Running) == 0 {
		in.Running = nil
	}
	d.End("batching input")
	return d.Err()
}

// grow returns s resized to n items (nil for 0), reusing its memory.
func grow[T any](s []T, n int) []T {
	if n == 0 {
		return nil
	}
	if cap(s) >= n {
		return s[:n]
	}
	return make([]T, n)
}

// EncodeBatchingOutput appends a StatusOK output carrying out to dst[:0].
func EncodeBatchingOutput(dst []byte, out *BatchingOutput) []byte {
	e := NewEncoder(dst)
	e.U8(StatusOK)
	e.Bool(out.Wait)
	e.U64(out.WaitUS)
	e.U32(uint32(len(out.Jobs)))
	for _, j := range out.Jobs {
		e.U32(j)
	}
	return e.Bytes()
}

// DecodeBatchingOutput decodes a batching output; a StatusError output
// yields a *GuestError.
func DecodeBatchingOutput(b []byte) (BatchingOutput, error) {
	var out BatchingOutput
	d := NewDecoder(b)
	if err := status(d); err != nil {
		return out, err
	}
	out.Wait = d.Bool("wait")
	out.WaitUS = d.U64()
	if n := d.Count("jobs", MaxJobs, 4); n > 0 {
		out.Jobs = make([]uint32, n)
		for i := range out.Jobs {
			out.Jobs[i] = d.U32()
		}
	}
	d.End("batching output")
	return out, d.Err()
}

// --- eviction ---

// EncodeEvictionInput appends the encoding of in at minor Minor to dst[:0].
func EncodeEvictionInput(dst []byte, in *EvictionInput) []byte {
	return EncodeEvictionInputAt(dst, in, Minor)
}

// EncodeEvictionInputAt appends the encoding of in at a module's minor
// version to dst[:0]: the minor-3 fields follow the models, as one flag
// then (when in.Tiers) the host budget and per model its unique bytes,
// offload and restore times and queued jobs.
func EncodeEvictionInputAt(dst []byte, in *EvictionInput, minor uint32) []byte {
	e := NewEncoder(dst)
	e.I64(in.NowUS)
	e.U64(in.NeededBytes)
	e.U64(in.BudgetBytes)
	e.U64(in.UsedBytes)
	e.U64(in.HostFreeBytes)
	e.U32(uint32(len(in.Models)))
	for i := range in.Models {
		m := &in.Models[i]
		e.Str(m.ID)
		e.U64(m.Bytes)
		e.I64(m.LastUseUS)
		e.U64(m.Uses)
		e.U64(m.LoadUS)
		e.Bool(m.Pinned)
		e.Bool(m.InUse)
	}
	if minor >= MinorTiers {
		e.Bool(in.Tiers)
		if in.Tiers {
			e.U64(in.HostBudgetBytes)
			for i := range in.Models {
				m := &in.Models[i]
				e.U64(m.UniqueBytes)
				e.U64(m.OffloadUS)
				e.U64(m.RestoreUS)
				e.U32(m.Queued)
			}
		}
	}
	return e.Bytes()
}

// DecodeEvictionInput decodes an eviction input.
func DecodeEvictionInput(b []byte) (EvictionInput, error) {
	var in EvictionInput
	err := DecodeEvictionInputInto(b, &in, false)
	return in, err
}

// DecodeEvictionInputInto decodes an eviction input into in, reusing its
// memory and, with alias set, sharing b's memory for strings.
func DecodeEvictionInputInto(b []byte, in *EvictionInput, alias bool) error {
	d := NewDecoder(b)
	if alias {
		d.Alias()
	}
	in.NowUS = d.I64()
	in.NeededBytes = d.U64()
	in.BudgetBytes = d.U64()
	in.UsedBytes = d.U64()
	in.HostFreeBytes = d.U64()
	n := d.Count("models", MaxModels, 38)
	in.Models = grow(in.Models, n)
	for i := range in.Models {
		m := &in.Models[i]
		m.ID = d.Str("model id", MaxStringBytes)
		m.Bytes = d.U64()
		m.LastUseUS = d.I64()
		m.Uses = d.U64()
		m.LoadUS = d.U64()
		m.Pinned = d.Bool("pinned")
		m.InUse = d.Bool("in_use")
		m.UniqueBytes, m.OffloadUS, m.RestoreUS, m.Queued = 0, 0, 0, 0
	}
	in.Tiers, in.HostBudgetBytes = false, 0
	if d.Err() == nil && d.Remaining() > 0 {
		// Minor 3.
		in.Tiers = d.Bool("tiers")
		if in.Tiers {
			in.HostBudgetBytes = d.U64()
			for i := range in.Models {
				m := &in.Models[i]
				m.UniqueBytes = d.U64()
				m.OffloadUS = d.U64()
				m.RestoreUS = d.U64()
				m.Queued = d.U32()
			}
		}
	}
	d.End("eviction input")
	return d.Err()
}

// EncodeEvictionOutput appends a StatusOK output carrying out to dst[:0].
func EncodeEvictionOutput(dst []byte, out *EvictionOutput) []byte {
	e := NewEncoder(dst)
	e.U8(StatusOK)
	e.U32(uint32(len(out.Victims)))
	for _, v := range out.Victims {
		e.U32(v.Index)
		e.Bool(v.Offload)
	}
	return e.Bytes()
}

// DecodeEvictionOutput decodes an eviction output; a StatusError output
// yields a *GuestError.
func DecodeEvictionOutput(b []byte) (EvictionOutput, error) {
	var out EvictionOutput
	d := NewDecoder(b)
	if err := status(d); err != nil {
		return out, err
	}
	if n := d.Count("victims", MaxModels, 5); n > 0 {
		out.Victims = make([]Victim, n)
		for i := range out.Victims {
			out.Victims[i] = Victim{Index: d.U32(), Offload: d.Bool("offload")}
		}
	}
	d.End("eviction output")
	return out, d.Err()
}

// --- quality ---

func encQualityParams(e *Encoder, p *QualityParams) {
	e.U32(p.Steps)
	e.U32(p.Width)
	e.U32(p.Height)
	e.Str(p.Sampler)
	e.Str(p.Profile)
}

func decQualityParams(d *Decoder) QualityParams {
	return QualityParams{
		Steps:   d.U32(),
		Width:   d.U32(),
		Height:  d.U32(),
		Sampler: d.Str("sampler", MaxStringBytes),
		Profile: d.Str("profile", MaxStringBytes),
	}
}

// EncodeQualityInput appends the encoding of in at minor Minor to dst[:0].
func EncodeQualityInput(dst []byte, in *QualityInput) []byte {
	return EncodeQualityInputAt(dst, in, Minor)
}

// EncodeQualityInputAt appends the encoding of in at a module's minor
// version to dst[:0] (fields of later minors are left out).
func EncodeQualityInputAt(dst []byte, in *QualityInput, minor uint32) []byte {
	e := NewEncoder(dst)
	e.I64(in.NowUS)
	e.Str(in.Tenant)
	e.U32(in.QueueDepth)
	e.U32(in.Running)
	e.U64(in.P50US)
	e.U64(in.P95US)
	e.U64(in.TargetP95US)
	e.F64(in.Level)
	encQualityParams(e, &in.Request)
	l := &in.Limits
	e.U32(l.MinSteps)
	e.U32(l.MaxSteps)
	e.U32(l.MinWidth)
	e.U32(l.MaxWidth)
	e.U32(l.MinHeight)
	e.U32(l.MaxHeight)
	e.U32(l.SizeMultiple)
	encStrings(e, l.Samplers)
	encStrings(e, l.Profiles)
	if minor >= MinorQuality {
		e.U32(in.Locked)
		e.Str(in.Model)
	}
	return e.Bytes()
}

// DecodeQualityInput decodes a quality input of any minor version.
func DecodeQualityInput(b []byte) (QualityInput, error) {
	in, _, err := DecodeQualityInputMinor(b)
	return in, err
}

// DecodeQualityInputMinor decodes a quality input and returns the minor
// version it was encoded at (0 or MinorQuality): a guest answers at the
// same minor, so that a host that sent no minor-2 fields gets none back.
func DecodeQualityInputMinor(b []byte) (QualityInput, uint32, error) {
	var in QualityInput
	var minor uint32
	d := NewDecoder(b)
	in.NowUS = d.I64()
	in.Tenant = d.Str("tenant", MaxStringBytes)
	in.QueueDepth = d.U32()
	in.Running = d.U32()
	in.P50US = d.U64()
	in.P95US = d.U64()
	in.TargetP95US = d.U64()
	in.Level = d.F64("level")
	in.Request = decQualityParams(d)
	l := &in.Limits
	l.MinSteps = d.U32()
	l.MaxSteps = d.U32()
	l.MinWidth = d.U32()
	l.MaxWidth = d.U32()
	l.MinHeight = d.U32()
	l.MaxHeight = d.U32()
	l.SizeMultiple = d.U32()
	l.Samplers = decStrings(d, "samplers")
	l.Profiles = decStrings(d, "profiles")
	if d.Err() == nil && d.Remaining() > 0 {
		minor = MinorQuality
		in.Locked = d.U32()
		in.Model = d.Str("model", MaxStringBytes)
	}
	d.End("quality input")
	return in, minor, d.Err()
}

// EncodeQualityOutput appends a StatusOK output carrying out, at minor
// Minor, to dst[:0].
func EncodeQualityOutput(dst []byte, out *QualityOutput) []byte {
	return EncodeQualityOutputAt(dst, out, Minor)
}

// EncodeQualityOutputAt appends a StatusOK output carrying out at a minor
// version (the one the input came at) to dst[:0].
func EncodeQualityOutputAt(dst []byte, out *QualityOutput, minor uint32) []byte {
	e := NewEncoder(dst)
	e.U8(StatusOK)
	encQualityParams(e, &out.Params)
	e.F64(out.Level)
	if minor >= MinorQuality {
		e.Str(out.Reason)
	}
	return e.Bytes()
}

// DecodeQualityOutput decodes a quality output; a StatusError output
// yields a *GuestError.
func DecodeQualityOutput(b []byte) (QualityOutput, error) {
	var out QualityOutput
	d := NewDecoder(b)
	if err := status(d); err != nil {
		return out, err
	}
	out.Params = decQualityParams(d)
	out.Level = d.F64("level")
	if d.Err() == nil && d.Remaining() > 0 {
		out.Reason = d.Str("reason", MaxStringBytes)
	}
	d.End("quality output")
	return out, d.Err()
}

// --- node pre ---

// EncodePreInput appends the encoding of in to dst[:0].
func EncodePreInput(dst []byte, in *PreInput) []byte {
	e := NewEncoder(dst)
	e.Str(in.Node)
	encParams(e, in.Params)
	e.Str(in.Tenant)
	e.Str(in.Model)
	e.Str(in.Prompt)
	e.Str(in.NegativePrompt)
	e.U32(in.Width)
	e.U32(in.Height)
	e.U32(in.Steps)
	e.F64(in.Guidance)
	e.Str(in.Sampler)
	e.U64(in.Seed)
	return e.Bytes()
}

// DecodePreInput decodes a pre-node input.
func DecodePreInput(b []byte) (PreInput, error) {
	var in PreInput
	d := NewDecoder(b)
	in.Node = d.Str("node", MaxStringBytes)
	in.Params = decParams(d)
	in.Tenant = d.Str("tenant", MaxStringBytes)
	in.Model = d.Str("model", MaxStringBytes)
	in.Prompt = d.Str("prompt", MaxPromptBytes)
	in.NegativePrompt = d.Str("negative_prompt", MaxPromptBytes)
	in.Width = d.U32()
	in.Height = d.U32()
	in.Steps = d.U32()
	in.Guidance = d.F64("guidance")
	in.Sampler = d.Str("sampler", MaxStringBytes)
	in.Seed = d.U64()
	d.End("node_pre input")
	return in, d.Err()
}

// EncodePreOutput appends a StatusOK output carrying out to dst[:0]. A
// rejection carries only the reason.
func EncodePreOutput(dst []byte, out *PreOutput) []byte {
	e := NewEncoder(dst)
	e.U8(StatusOK)
	e.Bool(out.Reject)
	if out.Reject {
		e.Str(out.Reason)
		return e.Bytes()
	}
	e.Str(out.Prompt)
	e.Str(out.NegativePrompt)
	e.U32(out.Width)
	e.U32(out.Height)
	e.U32(out.Steps)
	e.F64(out.Guidance)
	e.Str(out.Sampler)
	e.U64(out.Seed)
	return e.Bytes()
}

// DecodePreOutput decodes a pre-node output; a StatusError output yields
// a *GuestError.
func DecodePreOutput(b []byte) (PreOutput, error) {
	var out PreOutput
	d := NewDecoder(b)
	if err := status(d); err != nil {
		return out, err
	}
	out.Reject = d.Bool("reject")
	if out.Reject {
		out.Reason = d.Str("reason", MaxReasonBytes)
	} else {
		out.Prompt = d.Str("prompt", MaxPromptBytes)
		out.NegativePrompt = d.Str("negative_prompt", MaxPromptBytes)
		out.Width = d.U32()
		out.Height = d.U32()
		out.Steps = d.U32()
		out.Guidance = d.F64("guidance")
		out.Sampler = d.Str("sampler", MaxStringBytes)
		out.Seed = d.U64()
	}
	d.End("node_pre output")
	return out, d.Err()
}

// --- node post ---

func encImage(e *Encoder, im *Image) {
	e.U32(im.Width)
	e.U32(im.Height)
	e.Blob(im.Pix)
}

func decImage(d *Decoder) Image {
	var im Image
	im.Width = d.U32()
	im.Height = d.U32()
	im.Pix = d.Blob("pixels", 4*MaxImagePixels)
	if d.Err() == nil {
		if err := im.Check(); err != nil {
			d.Fail(err)
		}
	}
	return im
}

// Check reports an error unless the image's size is within the limits and
// its pixel buffer holds exactly 4 × Width × Height bytes.
func (im *Image) Check() error {
	if im.Width == 0 || im.Height == 0 || im.Width > MaxImageSide || im.Height > MaxImageSide {
		return errors.New("abi: image " + dims(im.Width, im.Height) + ": each side must be 1.." + itoa(MaxImageSide))
	}
	if uint64(im.Width)*uint64(im.Height) > MaxImagePixels {
		return errors.New("abi: image " + dims(im.Width, im.Height) + " exceeds " + itoa(MaxImagePixels) + " pixels")
	}
	if want := 4 * uint64(im.Width) * uint64(im.Height); uint64(len(im.Pix)) != want {
		return errors.New("abi: image " + dims(im.Width, im.Height) + " needs " + utoa(want) + " pixel bytes, got " + itoa(int64(len(im.Pix))))
	}
	return nil
}

// EncodePostInput appends the encoding of in to dst[:0].
func EncodePostInput(dst []byte, in *PostInput) []byte {
	e := NewEncoder(dst)
	e.Str(in.Node)
	encParams(e, in.Params)
	e.Str(in.Tenant)
	e.Str(in.Prompt)
	e.U64(in.Seed)
	encImage(e, &in.Image)
	return e.Bytes()
}

// DecodePostInput decodes a post-node input. The image's pixels alias b.
func DecodePostInput(b []byte) (PostInput, error) {
	var in PostInput
	d := NewDecoder(b)
	in.Node = d.Str("node", MaxStringBytes)
	in.Params = decParams(d)
	in.Tenant = d.Str("tenant", MaxStringBytes)
	in.Prompt = d.Str("prompt", MaxPromptBytes)
	in.Seed = d.U64()
	in.Image = decImage(d)
	d.End("node_post input")
	return in, d.Err()
}

// EncodePostOutput appends a StatusOK output carrying out to dst[:0]. A
// rejection carries only the reason.
func EncodePostOutput(dst []byte, out *PostOutput) []byte {
	e := NewEncoder(dst)
	e.U8(StatusOK)
	e.Bool(out.Reject)
	if out.Reject {
		e.Str(out.Reason)
		return e.Bytes()
	}
	encImage(e, &out.Image)
	return e.Bytes()
}

// DecodePostOutput decodes a post-node output; a StatusError output yields
// a *GuestError. The image's pixels alias b.
func DecodePostOutput(b []byte) (PostOutput, error) {
	var out PostOutput
	d := NewDecoder(b)
	if err := status(d); err != nil {
		return out, err
	}
	out.Reject = d.Bool("reject")
	if out.Reject {
		out.Reason = d.Str("reason", MaxReasonBytes)
	} else {
		out.Image = decImage(d)
	}
	d.End("node_post output")
	return out, d.Err()
}
