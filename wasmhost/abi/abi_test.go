package abi

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

func sampleBatching(n int) *BatchingInput {
	in := &BatchingInput{NowUS: 1_700_000_000_000_000, Model: "sd15", CompatRules: []string{"model", "width", "height", "steps", "sampler"},
		MaxBatch: 8, MaxWaitUS: 150_000, FreeMemBytes: 8 << 30,
		StepLatency: []StepLatency{{Batch: 1, LatencyUS: 28_000}, {Batch: 8, LatencyUS: 53_100}},
		Tenants:     []TenantShare{{Tenant: "acme", Weight: 2, Served: 40.5}, {Tenant: "globex", Weight: 1}}}
	for i := 0; i < n; i++ {
		in.Jobs = append(in.Jobs, Job{ID: fmt.Sprintf("01HZX%05d", i), Tenant: []string{"acme", "globex"}[i%2], Priority: int32(i%3 - 1),
			ArrivalUS: in.NowUS - int64(i*977), DeadlineUS: int64(i%5) * in.NowUS, Width: 512, Height: 768, N: uint32(1 + i%4), Steps: 25,
			Sampler: "dpmpp_2m", CompatKey: "sd15/512x768/25/dpmpp_2m", MemBytes: uint64(i) << 20})
	}
	return in
}

// withRunning adds a running batch (minor 1) to a batching input.
func withRunning(in *BatchingInput) *BatchingInput {
	in.Running = []RunningJob{{ID: "01HZR00001", Tenant: "acme", N: 2, RemainingSteps: 11}, {ID: "01HZR00002", Tenant: "globex", N: 1, RemainingSteps: 1}}
	in.ImageMemBytes = 300 << 20
	return in
}

// TestMinorVersions: a message encoded for minor 0 leaves out minor 1's
// fields and decodes as a minor-0 message; the minor-1 encoding appends
// them after every minor-0 byte.
func TestMinorVersions(t *testing.T) {
	in := withRunning(sampleBatching(3))
	m0 := EncodeBatchingInputAt(nil, in, 0)
	m1 := EncodeBatchingInputAt(nil, in, 1)
	if len(m1) <= len(m0) || string(m1[:len(m0)]) != string(m0) {
		t.Fatalf("minor 1 is not minor 0 plus appended fields (%d, %d bytes)", len(m0), len(m1))
	}
	got, err := DecodeBatchingInput(m0)
	if err != nil || got.Running != nil || got.ImageMemBytes != 0 || len(got.Jobs) != 3 {
		t.Fatalf("minor 0 message: %v %+v", err, got)
	}
}

func TestRoundTrips(t *testing.T) {
	for _, bi := range []*BatchingInput{sampleBatching(7), withRunning(sampleBatching(7))} {
		got, err := DecodeBatchingInput(EncodeBatchingInput(nil, bi))
		if err != nil || !reflect.DeepEqual(&got, bi) {
			t.Fatalf("batching input: %v\n%+v\n%+v", err, got, bi)
		}
	}
	bo := BatchingOutput{Jobs: []uint32{3, 1, 4}}
	if got, err := DecodeBatchingOutput(EncodeBatchingOutput(nil, &bo)); err != nil || !reflect.DeepEqual(got, bo) {
		t.Fatalf("batching output: %v %+v", err, got)
	}
	ei := EvictionInput{NowUS: 5, NeededBytes: 1 << 30, BudgetBytes: 2, UsedBytes: 3, HostFreeBytes: 4,
		Models: []Model{{ID: "a", Bytes: 9, LastUseUS: -1, Uses: 2, LoadUS: 7, Pinned: true}, {ID: "b", InUse: true}}}
	if got, err := DecodeEvictionInput(EncodeEvictionInput(nil, &ei)); err != nil || !reflect.DeepEqual(got, ei) {
		t.Fatalf("eviction input: %v %+v", err, got)
	}
	eo := EvictionOutput{Victims: []Victim{{Index: 1, Offload: true}, {Index: 0}}}
	if got, err := DecodeEvictionOutput(EncodeEvictionOutput(nil, &eo)); err != nil || !reflect.DeepEqual(got, eo) {
		t.Fatalf("eviction output: %v %+v", err, got)
	}
	qi := QualityInput{NowUS: 1, Tenant: "t", QueueDepth: 2, Running: 3, P50US: 4, P95US: 5, TargetP95US: 6, Level: 0.25,
		Request: QualityParams{Steps: 20, Width: 512, Height: 512, Sampler: "euler", Profile: "balanced"},
		Limits:  QualityLimits{MinSteps: 1, MaxSteps: 50, MinWidth: 64, MaxWidth: 1024, MinHeight: 64, MaxHeight: 1024, SizeMultiple: 8, Samplers: []string{"euler", "ddim"}, Profiles: []string{"speed_first"}}}
	if got, err := DecodeQualityInput(EncodeQualityInput(nil, &qi)); err != nil || !reflect.DeepEqual(got, qi) {
		t.Fatalf("quality input: %v %+v", err, got)
	}
	qo := QualityOutput{Params: qi.Request, Level: 0.5}
	if got, err := DecodeQualityOutput(EncodeQualityOutput(nil, &qo)); err != nil || !reflect.DeepEqual(got, qo) {
		t.Fatalf("quality output: %v %+v", err, got)
	}
	pi := PreInput{Node: "style", Params: []Param{{"preset", "anime"}}, Tenant: "t", Model: "m", Prompt: "p", NegativePrompt: "n",
		Width: 512, Height: 512, Steps: 20, Guidance: 7.5, Sampler: "euler", Seed: 1 << 60}
	if got, err := DecodePreInput(EncodePreInput(nil, &pi)); err != nil || !reflect.DeepEqual(got, pi) {
		t.Fatalf("pre input: %v %+v", err, got)
	}
	for _, po := range []PreOutput{{Reject: true, Reason: "no"}, {Prompt: "p", NegativePrompt: "n", Width: 8, Height: 16, Steps: 3, Guidance: 1, Sampler: "s", Seed: 2}} {
		if got, err := DecodePreOutput(EncodePreOutput(nil, &po)); err != nil || !reflect.DeepEqual(got, po) {
			t.Fatalf("pre output: %v %+v", err, got)
		}
	}
	img := Image{Width: 2, Height: 1, Pix: []byte{1, 2, 3, 4, 5, 6, 7, 8}}
	qi2 := PostInput{Node: "resize", Params: []Param{{"width", "1"}}, Tenant: "t", Prompt: "p", Seed: 9, Image: img}
	if got, err := DecodePostInput(EncodePostInput(nil, &qi2)); err != nil || !reflect.DeepEqual(got, qi2) {
		t.Fatalf("post input: %v %+v", err, got)
	}
	for _, po := range []PostOutput{{Reject: true, Reason: "no"}, {Image: img}} {
		if got, err := DecodePostOutput(EncodePostOutput(nil, &po)); err != nil || !reflect.DeepEqual(got, po) {
			t.Fatalf("post output: %v %+v", err, got)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	full := EncodeBatchingInput(nil, withRunning(sampleBatching(3)))
	minor0 := len(EncodeBatchingInputAt(nil, sampleBatching(3), 0))
	for n := 0; n < len(full); n++ {
		if n == minor0 {
			continue // a complete minor-0 message
		}
		if _, err := DecodeBatchingInput(full[:n]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", n)
		}
	}
	if _, err := DecodeBatchingInput(append(full, 0)); err == nil || !strings.Contains(err.Error(), "trailing") {
		t.Fatalf("trailing byte: %v", err)
	}
	// A count that claims more items than the message could hold fails
	// without allocating them.
	e := NewEncoder(nil)
	e.U32(100000)
	if _, err := DecodeEvictionOutput(append([]byte{StatusOK}, e.Bytes()...)); err == nil {
		t.Fatal("huge victim count accepted")
	}
	if _, err := DecodeBatchingOutput(EncodeError(nil, "nope")); err == nil {
		t.Fatal("error status decoded as an answer")
	} else if ge := new(GuestError); !errors.As(err, &ge) || ge.Message != "nope" {
		t.Fatalf("error status: %v", err)
	}
	e = NewEncoder(nil)
	e.U8(StatusOK)
	e.U32(1)
	e.U32(1)
	e.Blob([]byte{1, 2, 3})
	if _, err := DecodePostOutput(append([]byte{StatusOK, 0}, e.Bytes()[1:]...)); err == nil {
		t.Fatal("image with wrong pixel count accepted")
	}
	q := EncodeQualityOutput(nil, &QualityOutput{Level: math.NaN()})
	if _, err := DecodeQualityOutput(q); err == nil || !strings.Contains(err.Error(), "finite") {
		t.Fatalf("NaN level: %v", err)
	}
	if _, err := DecodeEvictionOutput([]byte{StatusOK, 1, 0, 0, 0, 0, 0, 0, 0, 2}); err == nil {
		t.Fatal("boolean byte 2 accepted")
	}
}

func TestValidation(t *testing.T) {
	in := sampleBatching(4)
	in.MaxBatch = 4
	in.Jobs[2].CompatKey = "other"
	for _, c := range []struct {
		out  BatchingOutput
		want string
	}{
		{BatchingOutput{}, "at least one job"},
		{BatchingOutput{Jobs: []uint32{9}}, "out of range"},
		{BatchingOutput{Jobs: []uint32{0, 0}}, "named twice"},
		{BatchingOutput{Jobs: []uint32{0, 2}}, "different compatibility keys"},
		{BatchingOutput{Wait: true}, "wait of 0"},
		{BatchingOutput{Wait: true, WaitUS: 5, Jobs: []uint32{1}}, "must not name jobs"},
		{BatchingOutput{Jobs: []uint32{0, 1, 3}}, "exceeds max_batch"},
	} {
		if err := ValidateBatching(in, &c.out); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%+v: %v, want %q", c.out, err, c.want)
		}
	}
	if err := ValidateBatching(in, &BatchingOutput{Jobs: []uint32{1, 0}}); err != nil {
		t.Fatal(err)
	}
	ev := &EvictionInput{NeededBytes: 10, HostFreeBytes: 5, Models: []Model{{ID: "a", Bytes: 8}, {ID: "p", Bytes: 8, Pinned: true}, {ID: "b", Bytes: 8}}}
	for _, c := range []struct {
		out  EvictionOutput
		want string
	}{
		{EvictionOutput{Victims: []Victim{{Index: 1}}}, "pinned"},
		{EvictionOutput{Victims: []Victim{{Index: 0}}}, "frees 8 of the 10"},
		{EvictionOutput{Victims: []Victim{{Index: 0, Offload: true}, {Index: 2}}}, "offloading 8 bytes"},
		{EvictionOutput{Victims: []Victim{{Index: 5}}}, "out of range"},
	} {
		if err := ValidateEviction(ev, &c.out); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%+v: %v, want %q", c.out, err, c.want)
		}
	}
	qi := &QualityInput{Request: QualityParams{Steps: 20, Width: 512, Height: 512, Sampler: "euler"},
		Limits: QualityLimits{MinSteps: 10, MaxSteps: 30, MinWidth: 256, MaxWidth: 768, MinHeight: 256, MaxHeight: 768, SizeMultiple: 64, Samplers: []string{"ddim"}}}
	for _, c := range []struct {
		out  QualityOutput
		want string
	}{
		{QualityOutput{Params: QualityParams{Steps: 40, Width: 512, Height: 512, Sampler: "euler"}}, "steps 40 outside"},
		{QualityOutput{Params: QualityParams{Steps: 20, Width: 520, Height: 512, Sampler: "euler"}}, "not a multiple"},
		{QualityOutput{Params: QualityParams{Steps: 20, Width: 512, Height: 512, Sampler: "lms"}}, "sampler"},
		{QualityOutput{Params: QualityParams{Steps: 20, Width: 512, Height: 512, Sampler: "ddim"}, Level: 2}, "level"},
	} {
		if err := ValidateQuality(qi, &c.out); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%+v: %v, want %q", c.out, err, c.want)
		}
	}
}

// BenchmarkEncoding compares the ABI's binary encoding with JSON for the
// batching input of 64 jobs (sizes are reported as metrics).
func BenchmarkEncoding(b *testing.B) {
	in := sampleBatching(64)
	bin := EncodeBatchingInput(nil, in)
	js, _ := json.Marshal(in)
	b.Run("binary/encode", func(b *testing.B) {
		buf := make([]byte, 0, len(bin))
		b.ReportMetric(float64(len(bin)), "bytes/msg")
		for i := 0; i < b.N; i++ {
			buf = EncodeBatchingInput(buf, in)
		}
	})
	b.Run("binary/decode", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := DecodeBatchingInput(bin); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json/encode", func(b *testing.B) {
		b.ReportMetric(float64(len(js)), "bytes/msg")
		for i := 0; i < b.N; i++ {
			if _, err := json.Marshal(in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json/decode", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			var out BatchingInput
			if err := json.Unmarshal(js, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestValidateAdmission: an answer about a running batch may mix
// compatibility keys, and counts the running images against max_batch and
// the measured activation memory against the free memory.
func TestValidateAdmission(t *testing.T) {
	in := withRunning(sampleBatching(4)) // running: 3 images; jobs 0..3 have 1..4 images
	in.Jobs[1].CompatKey = "other"
	in.MaxBatch, in.FreeMemBytes = 8, 8<<30
	if err := ValidateBatching(in, &BatchingOutput{Jobs: []uint32{0, 1}}); err != nil {
		t.Fatalf("mixed keys joining: %v", err)
	}
	if err := ValidateBatching(in, &BatchingOutput{Jobs: []uint32{3, 1}}); err == nil || !strings.Contains(err.Error(), "running batch of 9") {
		t.Fatalf("over max_batch with the running images: %v", err)
	}
	in.FreeMemBytes = 1 << 30 // 300 MiB per image: 3 running + 1 joining = 1.2 GiB
	if err := ValidateBatching(in, &BatchingOutput{Jobs: []uint32{0}}); err == nil || !strings.Contains(err.Error(), "activations") {
		t.Fatalf("over the free memory: %v", err)
	}
}

// TestQualityMinorVersions: minor-2 fields travel only at minor 2; a
// minor-0 encoding decodes without them, and answers come back at the
// minor the input came at.
func TestQualityMinorVersions(t *testing.T) {
	in := QualityInput{Tenant: "t", Level: 0.5, Request: QualityParams{Steps: 20, Width: 64, Height: 64, Sampler: "e", Profile: "p"},
		Limits: QualityLimits{MaxSteps: 50, SizeMultiple: 8}, Locked: LockSteps | LockWidth, Model: "m"}
	old := EncodeQualityInputAt(nil, &in, 0)
	got, minor, err := DecodeQualityInputMinor(old)
	if err != nil || minor != 0 || got.Locked != 0 || got.Model != "" || got.Request != in.Request {
		t.Fatalf("minor 0: %+v %d %v", got, minor, err)
	}
	got, minor, err = DecodeQualityInputMinor(EncodeQualityInput(nil, &in))
	if err != nil || minor != MinorQuality || !reflect.DeepEqual(got, in) {
		t.Fatalf("minor 2: %+v %d %v", got, minor, err)
	}
	out := QualityOutput{Params: in.Request, Level: 0.25, Reason: "p95 over target"}
	if o, err := DecodeQualityOutput(EncodeQualityOutputAt(nil, &out, 0)); err != nil || o.Reason != "" || o.Level != 0.25 {
		t.Fatalf("minor-0 output: %+v %v", o, err)
	}
	if o, err := DecodeQualityOutput(EncodeQualityOutputAt(nil, &out, MinorQuality)); err != nil || o != out {
		t.Fatalf("minor-2 output: %+v %v", o, err)
	}
}
