package wasmhost

import (
	"context"
	"errors"

	"github.com/kiln-project/kiln/wasmhost/abi"
)

// Each hook has two entry points:
//
//   - CallX runs the module and returns its own answer, validated, or the
//     zero answer with an Outcome saying why not (conformance tests and
//     shadow comparisons use it);
//   - X always returns a usable answer: the module's when the call
//     succeeded, otherwise the built-in native default's (Outcome.Fallback
//     is then set). A nil *Module answers natively (ResultNative) with
//     the zero Natives.

func (m *Module) maxNodeOutput() int {
	// Header, reason and parameters are far below 64 KiB.
	return int(4*m.host.cfg.MaxNodePixels) + 64<<10
}

func badInput(err error) Outcome { return Outcome{Result: ResultBadInput, Err: err} }

// CallBatching asks the module which jobs to batch.
func (m *Module) CallBatching(ctx context.Context, in *abi.BatchingInput) (abi.BatchingOutput, Outcome) {
	var out abi.BatchingOutput
	if err := abi.CheckBatchingInput(in); err != nil {
		return out, badInput(err)
	}
	if len(in.Running) > 0 && m.info.ABIMinor < abi.MinorBatching {
		// A module of minor 0 cannot see the running batch: its answer
		// would ignore the images already on the device.
		return out, badInput(errors.New("wasmhost: the module speaks ABI minor 0; admission to a running batch needs minor 1"))
	}
	o := m.invoke(ctx, abi.HookBatching, in.NowUS, abi.EncodeBatchingInputAt(nil, in, m.info.ABIMinor), m.host.cfg.MaxPolicyOutput, func(b []byte) error {
		var err error
		if out, err = abi.DecodeBatchingOutput(b); err != nil {
			return err
		}
		return abi.ValidateBatching(in, &out)
	})
	if !o.OK() {
		return abi.BatchingOutput{}, o
	}
	return out, o
}

// Batching returns the module's batching decision, or the built-in's.
// Admission to a running batch (minor 1) is answered natively for a
// module of minor 0, without counting against it.
func (m *Module) Batching(ctx context.Context, in *abi.BatchingInput) (abi.BatchingOutput, Outcome) {
	if m != nil && (len(in.Running) == 0 || m.info.ABIMinor >= abi.MinorBatching) {
		out, o := m.CallBatching(ctx, in)
		if o.OK() {
			return out, o
		}
		return m.host.cfg.Natives.batching(in), fallback(o)
	}
	return Natives{}.batching(in), Outcome{Result: ResultNative, Fallback: true}
}

// CallEviction asks the module which models to evict.
func (m *Module) CallEviction(ctx context.Context, in *abi.EvictionInput) (abi.EvictionOutput, Outcome) {
	var out abi.EvictionOutput
	if err := abi.CheckEvictionInput(in); err != nil {
		return out, badInput(err)
	}
	o := m.invoke(ctx, abi.HookEviction, in.NowUS, abi.EncodeEvictionInputAt(nil, in, m.info.ABIMinor), m.host.cfg.MaxPolicyOutput, func(b []byte) error {
		var err error
		if out, err = abi.DecodeEvictionOutput(b); err != nil {
			return err
		}
		return abi.ValidateEviction(in, &out)
	})
	if !o.OK() {
		return abi.EvictionOutput{}, o
	}
	return out, o
}

// Eviction returns the module's victims, or the built-in's.
func (m *Module) Eviction(ctx context.Context, in *abi.EvictionInput) (abi.EvictionOutput, Outcome) {
	if m != nil {
		out, o := m.CallEviction(ctx, in)
		if o.OK() {
			return out, o
		}
		return m.host.cfg.Natives.eviction(in), fallback(o)
	}
	return Natives{}.eviction(in), Outcome{Result: ResultNative, Fallback: true}
}

// CallQuality asks the module how to adjust a request.
func (m *Module) CallQuality(ctx context.Context, in *abi.QualityInput) (abi.QualityOutput, Outcome) {
	var out abi.QualityOutput
	if err := abi.CheckQualityInput(in); err != nil {
		return out, badInput(err)
	}
	o := m.invoke(ctx, abi.HookQuality, in.NowUS, abi.EncodeQualityInputAt(nil, in, m.info.ABIMinor), m.host.cfg.MaxPolicyOutput, func(b []byte) error {
		var err error
		if out, err = abi.DecodeQualityOutput(b); err != nil {
			return err
		}
		// Parameters the request locked stay as requested, whatever the
		// module (of any minor) answered.
		abi.RestoreLocked(in, &out)
		return abi.ValidateQuality(in, &out)
	})
	if !o.OK() {
		return abi.QualityOutput{}, o
	}
	return out, o
}

// Quality returns the module's adjusted request, or the built-in's.
func (m *Module) Quality(ctx context.Context, in *abi.QualityInput) (abi.QualityOutput, Outcome) {
	if m != nil {
		out, o := m.CallQuality(ctx, in)
		if o.OK() {
			return out, o
		}
		return m.host.cfg.Natives.quality(in), fallback(o)
	}
	return Natives{}.quality(in), Outcome{Result: ResultNative, Fallback: true}
}

// CallNodePre runs the module's pre-processing node.
func (m *Module) CallNodePre(ctx context.Context, in *abi.PreInput) (abi.PreOutput, Outcome) {
	var out abi.PreOutput
	o := m.invoke(ctx, abi.HookNodePre, 0, abi.EncodePreInput(nil, in), m.maxNodeOutput(), func(b []byte) error {
		var err error
		if out, err = abi.DecodePreOutput(b); err != nil {
			return err
		}
		return abi.ValidatePre(&out)
	})
	if !o.OK() {
		return abi.PreOutput{}, o
	}
	return out, o
}

// NodePre returns the module's answer, or the native default's (Natives.Pre).
func (m *Module) NodePre(ctx context.Context, in *abi.PreInput) (abi.PreOutput, Outcome) {
	if m != nil {
		out, o := m.CallNodePre(ctx, in)
		if o.OK() {
			return out, o
		}
		return m.host.cfg.Natives.Pre(in), fallback(o)
	}
	return Natives{}.Pre(in), Outcome{Result: ResultNative, Fallback: true}
}

// CallNodePost runs the module's post-processing node.
func (m *Module) CallNodePost(ctx context.Context, in *abi.PostInput) (abi.PostOutput, Outcome) {
	var out abi.PostOutput
	if err := in.Image.Check(); err != nil {
		return out, badInput(err)
	}
	o := m.invoke(ctx, abi.HookNodePost, 0, abi.EncodePostInput(nil, in), m.maxNodeOutput(), func(b []byte) error {
		var err error
		if out, err = abi.DecodePostOutput(b); err != nil {
			return err
		}
		return abi.ValidatePost(&out, m.host.cfg.MaxNodePixels)
	})
	if !o.OK() {
		return abi.PostOutput{}, o
	}
	return out, o
}

// NodePost returns the module's answer, or the native default's
// (Natives.Post, which may change in.Image's pixels in place).
func (m *Module) NodePost(ctx context.Context, in *abi.PostInput) (abi.PostOutput, Outcome) {
	if m != nil {
		out, o := m.CallNodePost(ctx, in)
		if o.OK() {
			return out, o
		}
		return m.host.cfg.Natives.Post(in), fallback(o)
	}
	return Natives{}.Post(in), Outcome{Result: ResultNative, Fallback: true}
}

func fallback(o Outcome) Outcome {
	o.Fallback = true
	return o
}
