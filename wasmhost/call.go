package wasmhost

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/tetratelabs/wazero/sys"
)

// Result labels the outcome of one call (the result label of
// kiln_wasm_calls_total).
type Result string

// Call results. Every result but ResultOK means the caller got the
// built-in native answer instead of the module's.
const (
	ResultOK         Result = "ok"
	ResultTrap       Result = "trap"        // the guest trapped or exited
	ResultTimeout    Result = "timeout"     // the call ran past its deadline
	ResultOOM        Result = "oom"         // the guest ran out of memory under its cap
	ResultInvalid    Result = "invalid"     // the answer was malformed, oversized or out of range
	ResultGuestError Result = "guest_error" // the guest answered with an error status
	ResultDisabled   Result = "disabled"    // the module is disabled after repeated failures
	ResultBusy       Result = "busy"        // no instance was free before the deadline
	ResultCanceled   Result = "canceled"    // the caller gave up (not the guest's fault)
	ResultMissing    Result = "missing"     // the module does not implement the hook
	ResultBadInput   Result = "bad_input"   // the host's own input broke the ABI's limits
	ResultNative     Result = "native"      // no module: the native default answered
)

// Results lists every result label.
func Results() []Result {
	return []Result{ResultOK, ResultTrap, ResultTimeout, ResultOOM, ResultInvalid, ResultGuestError,
		ResultDisabled, ResultBusy, ResultCanceled, ResultMissing, ResultBadInput, ResultNative}
}

// isFailure reports whether r counts against the module's health.
func (r Result) isFailure() bool {
	switch r {
	case ResultTrap, ResultTimeout, ResultOOM, ResultInvalid, ResultGuestError:
		return true
	}
	return false
}

// Outcome reports how a call went.
type Outcome struct {
	Result   Result
	Err      error         // why, when Result is not ResultOK
	Duration time.Duration // wall time of the call, encoding included
	Fallback bool          // the answer is the native default's
}

// OK reports whether the module's own answer was used.
func (o Outcome) OK() bool { return o.Result == ResultOK }

// invoke runs hook over input in an instance of m and hands the output
// to check (which decodes and validates it) before the instance goes back
// to the pool. nowUS is the virtual wall clock the guest sees.
func (m *Module) invoke(ctx context.Context, hook abi.Hook, nowUS int64, input []byte, maxOut int, check func([]byte) error) Outcome {
	start := time.Now()
	o := m.invoke1(ctx, hook, nowUS, input, maxOut, check)
	o.Duration = time.Since(start)
	m.host.metrics.observe(m.info.Label, hook, o.Result, o.Duration)
	switch {
	case o.Result == ResultOK:
		m.health.success()
	case o.Result.isFailure():
		cfg := &m.host.cfg
		if m.health.failure(cfg.Now(), cfg.FailureThreshold, cfg.BackoffBase, cfg.BackoffMax) {
			h := m.Health()
			cfg.Logger.Warn("wasm module disabled after repeated failures",
				"wasm_module", m.info.Label, "hook", string(hook), "result", string(o.Result),
				"error", o.Err, "until", h.DisabledUntil, "backoff", h.Backoff)
		}
	}
	return o
}

func (m *Module) invoke1(ctx context.Context, hook abi.Hook, nowUS int64, input []byte, maxOut int, check func([]byte) error) Outcome {
	if !m.hooks[hook] {
		return Outcome{Result: ResultMissing, Err: fmt.Errorf("wasmhost: %s does not implement %s", m.info.Label, hook)}
	}
	if !m.health.allow(m.host.cfg.Now()) {
		return Outcome{Result: ResultDisabled, Err: fmt.Errorf("wasmhost: %s is disabled after repeated failures", m.info.Label)}
	}
	timeout := m.host.cfg.PolicyTimeout
	if !hook.IsPolicy() {
		timeout = m.host.cfg.NodeTimeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	inst, err := m.acquire(cctx)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return Outcome{Result: ResultCanceled, Err: ctx.Err()}
		case errors.Is(err, errBusy):
			return Outcome{Result: ResultBusy, Err: err}
		case errors.Is(err, ErrClosed):
			return Outcome{Result: ResultDisabled, Err: err}
		}
		// A failed instantiation is the module's failure.
		return m.classify(ctx, nil, nil, err)
	}
	st := &callState{inst: inst.state, module: m, wallNS: nowUS * 1000, mono0: inst.state.mono}
	cctx = withCallState(cctx, st)
	defer st.flush()

	out, err := m.run(cctx, inst, hook, input, maxOut)
	if err == nil {
		err = check(out)
		if err != nil {
			var ge *abi.GuestError
			r := ResultInvalid
			if errors.As(err, &ge) {
				r = ResultGuestError
			}
			m.release(ctx, inst, false)
			return Outcome{Result: r, Err: fmt.Errorf("wasmhost: %s %s: %w", m.info.Label, hook, err)}
		}
		m.release(ctx, inst, true)
		return Outcome{Result: ResultOK}
	}
	o := m.classify(ctx, inst, st, err)
	m.release(ctx, inst, false)
	return o
}

// errOutput marks errors in the output's location or size.
type errOutput struct{ msg string }

func (e *errOutput) Error() string { return e.msg }

// run writes input into the instance, calls the hook and copies the
// output out of guest memory.
func (m *Module) run(ctx context.Context, inst *instance, hook abi.Hook, input []byte, maxOut int) ([]byte, error) {
	res, err := inst.alloc.Call(ctx, uint64(uint32(len(input))))
	if err != nil {
		return nil, err
	}
	ptr := uint32(res[0])
	mem := inst.mod.Memory()
	if len(input) > 0 && (ptr == 0 || !mem.Write(ptr, input)) {
		return nil, &errOutput{fmt.Sprintf("%s returned %#x for %d bytes, outside memory", abi.ExportAlloc, ptr, len(input))}
	}
	res, err = inst.hooks[hook].Call(ctx, uint64(ptr), uint64(uint32(len(input))))
	if err != nil {
		return nil, err
	}
	optr, olen := uint32(res[0]>>32), uint32(res[0])
	if int64(olen) > int64(maxOut) {
		return nil, &errOutput{fmt.Sprintf("output of %d bytes exceeds the limit of %d", olen, maxOut)}
	}
	b, ok := mem.Read(optr, olen)
	if !ok {
		return nil, &errOutput{fmt.Sprintf("output at %#x (%d bytes) lies outside memory", optr, olen)}
	}
	return append([]byte(nil), b...), nil
}

// classify names a failed call's result.
func (m *Module) classify(ctx context.Context, inst *instance, st *callState, err error) Outcome {
	wrap := func(r Result, err error) Outcome {
		msg := fmt.Sprintf("wasmhost: %s: %v", m.info.Label, err)
		if st != nil {
			if out := strings.TrimSpace(st.captured()); out != "" {
				if len(out) > 300 {
					out = out[:300] + "…"
				}
				msg += " (guest output: " + out + ")"
			}
		}
		return Outcome{Result: r, Err: errors.New(msg)}
	}
	var oe *errOutput
	if errors.As(err, &oe) {
		return wrap(ResultInvalid, err)
	}
	var ee *sys.ExitError
	if errors.As(err, &ee) {
		switch ee.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			if ctx.Err() == context.Canceled {
				return wrap(ResultCanceled, err)
			}
			return wrap(ResultTimeout, err)
		case sys.ExitCodeContextCanceled:
			return wrap(ResultCanceled, err)
		}
	}
	if ctx.Err() == context.Canceled {
		return wrap(ResultCanceled, err)
	}
	if m.outOfMemory(inst, st, err) {
		return wrap(ResultOOM, err)
	}
	return wrap(ResultTrap, err)
}

// outOfMemory recognises a guest that hit its memory cap: its memory
// reached three quarters of the cap (a failed memory.grow leaves it below
// the cap by up to one growth step), or its runtime said so before exiting.
func (m *Module) outOfMemory(inst *instance, st *callState, err error) bool {
	if st != nil && strings.Contains(st.captured(), "out of memory") {
		return true
	}
	if strings.Contains(err.Error(), "out of memory") {
		return true
	}
	if inst != nil && inst.mod.Memory() != nil {
		limit := uint64(m.rt.pages) * 65536
		return uint64(inst.mod.Memory().Size())*4 >= limit*3
	}
	return false
}
