package wasmhost

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tetratelabs/wazero"
)

// CompileGate bounds the compilations running at once across the hosts
// that share it (the serving host and the upload checks' hosts), so that
// uploads cannot pile compilers up. A compilation abandoned by its caller
// keeps its slot until the compiler returns.
type CompileGate struct{ slots chan struct{} }

// NewCompileGate returns a gate of n slots (n < 1 means 1).
func NewCompileGate(n int) *CompileGate {
	return &CompileGate{slots: make(chan struct{}, max(n, 1))}
}

// Gate returns the host's compile gate.
func (h *Host) Gate() *CompileGate { return h.gate }

// compile checks the module's structure, then compiles it in the gate's
// turn within the compile timeout. The caller gets its answer as soon as
// ctx ends (an uploader that disconnects) or the timeout passes; the
// compiler, which cannot be interrupted, finishes in the background and
// its result is dropped.
func (h *Host) compile(ctx context.Context, rt *runtime, wasm []byte, trusted bool) (wazero.CompiledModule, error) {
	if !trusted {
		if _, err := CheckStructure(wasm, h.cfg.Structure); err != nil {
			reason := err.Error()
			if !errors.Is(err, ErrStructure) {
				reason = "not a valid module within the limits: " + reason
			}
			return nil, &ValidationError{Reasons: []string{reason}}
		}
	}
	timeout := time.NewTimer(h.cfg.CompileTimeout)
	defer timeout.Stop()
	select {
	case h.gate.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("wasmhost: compile: %w", context.Cause(ctx))
	case <-timeout.C:
		return nil, fmt.Errorf("wasmhost: compile: no compiler free within %v", h.cfg.CompileTimeout)
	}
	type result struct {
		cm  wazero.CompiledModule
		err error
	}
	done := make(chan result, 1)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		<-h.gate.slots
		return nil, errors.New("wasmhost: compile: host is closed")
	}
	h.compiling.Add(1)
	h.mu.Unlock()
	go func() {
		defer h.compiling.Done()
		defer func() { <-h.gate.slots }()
		cm, err := rt.rt.CompileModule(context.WithoutCancel(ctx), wasm)
		done <- result{cm, err}
	}()
	abandon := func() {
		go func() {
			if r := <-done; r.cm != nil {
				_ = r.cm.Close(context.Background())
			}
		}()
	}
	select {
	case r := <-done:
		if r.err != nil {
			return nil, &ValidationError{Reasons: []string{"not a valid module within the limits: " + r.err.Error()}}
		}
		return r.cm, nil
	case <-ctx.Done():
		abandon()
		h.metrics.compileAbandoned("canceled")
		return nil, fmt.Errorf("wasmhost: compile: %w", context.Cause(ctx))
	case <-timeout.C:
		abandon()
		h.metrics.compileAbandoned("timeout")
		return nil, &ValidationError{Reasons: []string{fmt.Sprintf("compilation took longer than %v", h.cfg.CompileTimeout)}}
	}
}
