package wasmhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// Spec names a module being loaded.
type Spec struct {
	// Tenant owns the module; its modules share runtimes of their own.
	// Operator modules use the empty tenant.
	Tenant string
	// Name is the module's name, used in logs.
	Name string
	// Label is the module label of its metrics; defaults to Name, or
	// "tenant/name" for a tenant's module.
	Label string
	// Kind selects the memory cap and deadline.
	Kind Kind
	// Trusted compiles the module without wazero's deadline checks, which
	// cost a check at every loop header and so every function entry of a
	// Go guest: 4–9× on the built-in batching decision (measured). A trusted
	// call still falls back on traps, memory exhaustion and invalid
	// answers, but cannot be interrupted at its deadline. Only for the
	// modules Kiln ships (the caller must verify the bytes); uploaded
	// modules are never trusted.
	Trusted bool
}

// Info describes a loaded module.
type Info struct {
	Tenant string     `json:"tenant,omitempty"`
	Name   string     `json:"name"`
	Label  string     `json:"label"`
	Kind   string     `json:"kind"`
	SHA256 string     `json:"sha256"`
	Size   int        `json:"size"`
	Hooks  []abi.Hook `json:"hooks"`
	// CompileTime and InitTime are seconds.
	CompileTime float64 `json:"compile_s"`
	InitTime    float64 `json:"init_s"`
	Trusted     bool    `json:"trusted,omitempty"`
	// ABIMinor is the minor ABI version the module reports (0 without
	// the kiln_abi_minor export).
	ABIMinor uint32 `json:"abi_minor"`
}

// ValidationError lists why a module was refused.
type ValidationError struct {
	Reasons []string
}

// Error lists every reason the module was rejected.
func (e *ValidationError) Error() string {
	return "wasmhost: module rejected: " + strings.Join(e.Reasons, "; ")
}

// Module is a compiled, validated module with its pool of instances and
// its health. It is safe for concurrent use; each call takes an instance
// of its own.
type Module struct {
	host     *Host
	rt       *runtime
	compiled wazero.CompiledModule
	info     Info
	hasInit  bool
	hasMinor bool
	hooks    map[abi.Hook]bool

	sem chan struct{} // one token per instance in use

	mu     sync.Mutex
	idle   []*instance
	closed bool

	health health

	logs limiter

	cmu      sync.Mutex
	counters map[string]int64

	peakPages atomicMax
}

// instance is one instantiation of a module, used by one goroutine at a time.
type instance struct {
	mod   api.Module
	alloc api.Function
	hooks map[abi.Hook]api.Function
	state *instanceState
	minor uint32 // the module's minor ABI version
}

// Load compiles and validates wasm as spec says and instantiates it once
// (checking its version marker and initialiser). A module that fails
// returns a *ValidationError listing the reasons.
func (h *Host) Load(ctx context.Context, spec Spec, wasm []byte) (*Module, error) {
	rt, err := h.runtimeFor(ctx, spec.Tenant, spec.Kind, spec.Trusted)
	if err != nil {
		return nil, err
	}
	if spec.Label == "" {
		spec.Label = spec.Name
		if spec.Tenant != "" {
			spec.Label = spec.Tenant + "/" + spec.Name
		}
	}
	sum := sha256.Sum256(wasm)
	t0 := time.Now()
	compiled, err := h.compile(ctx, rt, wasm, spec.Trusted)
	if err != nil {
		return nil, err
	}
	compileTime := time.Since(t0)
	hooks, hasInit, reasons := checkModule(compiled, spec.Kind)
	_, hasMinor := compiled.ExportedFunctions()[abi.ExportMinor]
	if len(reasons) > 0 {
		_ = compiled.Close(ctx)
		return nil, &ValidationError{Reasons: reasons}
	}
	m := &Module{
		host:     h,
		rt:       rt,
		compiled: compiled,
		hasInit:  hasInit,
		hasMinor: hasMinor,
		hooks:    map[abi.Hook]bool{},
		sem:      make(chan struct{}, h.cfg.MaxInstances),
		logs:     limiter{rate: h.cfg.LogPerSecond, burst: float64(h.cfg.LogBurst), tokens: float64(h.cfg.LogBurst)},
		counters: map[string]int64{},
	}
	for _, hk := range hooks {
		m.hooks[hk] = true
	}
	m.info = Info{
		Tenant: spec.Tenant, Name: spec.Name, Label: spec.Label, Kind: spec.Kind.String(),
		SHA256: hex.EncodeToString(sum[:]), Size: len(wasm), Hooks: hooks,
		CompileTime: compileTime.Seconds(), Trusted: spec.Trusted,
	}
	t1 := time.Now()
	inst, err := m.instantiate(ctx)
	if err != nil {
		_ = compiled.Close(ctx)
		return nil, &ValidationError{Reasons: []string{err.Error()}}
	}
	m.info.InitTime = time.Since(t1).Seconds()
	m.info.ABIMinor = inst.minor
	m.idle = append(m.idle, inst)
	return m, nil
}

// Info describes the module.
func (m *Module) Info() Info { return m.info }

// Label is the module's metrics label.
func (m *Module) Label() string { return m.info.Label }

// Has reports whether the module implements hook.
func (m *Module) Has(hook abi.Hook) bool { return m.hooks[hook] }

// Close discards the module's idle instances and its compiled code;
// instances in use are discarded when their calls end.
func (m *Module) Close(ctx context.Context) error {
	m.mu.Lock()
	idle := m.idle
	m.idle = nil
	already := m.closed
	m.closed = true
	m.mu.Unlock()
	if already {
		return nil
	}
	var errs []error
	for _, in := range idle {
		errs = append(errs, in.mod.Close(ctx))
	}
	errs = append(errs, m.compiled.Close(ctx))
	return errors.Join(errs...)
}

func sig(d api.FunctionDefinition) string {
	return typesString(d.ParamTypes()) + "->" + typesString(d.ResultTypes())
}

func typesString(ts []api.ValueType) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = api.ValueTypeName(t)
	}
	return "(" + strings.Join(s, ",") + ")"
}

func hostSigs() map[string]string {
	m := map[string]string{}
	for _, group := range []struct {
		module string
		fns    []hostFunc
	}{{abi.WASIModule, wasiFuncs()}, {abi.HostModule, kilnFuncs()}} {
		for _, f := range group.fns {
			m[group.module+"."+f.name] = typesString(f.params) + "->" + typesString(f.results)
		}
	}
	return m
}

// checkModule applies the ABI's static rules: only known imports with
// the right signatures, no imported memory, an exported memory, the
// version marker, the allocator, and at least one hook of the module's
// kind, every export with the ABI's signature.
func checkModule(c wazero.CompiledModule, kind Kind) (hooks []abi.Hook, hasInit bool, reasons []string) {
	known := hostSigs()
	for _, f := range c.ImportedFunctions() {
		mod, name, _ := f.Import()
		want, ok := known[mod+"."+name]
		switch {
		case !ok:
			reasons = append(reasons, fmt.Sprintf("unknown import %s.%s (the host offers only the WASI subset Go's wasip1 runtime needs and the %q functions)", mod, name, abi.HostModule))
		case sig(f) != want:
			reasons = append(reasons, fmt.Sprintf("import %s.%s has signature %s, want %s", mod, name, sig(f), want))
		}
	}
	if len(c.ImportedMemories()) > 0 {
		reasons = append(reasons, "imports a memory (a module must define and export its own)")
	}
	if _, ok := c.ExportedMemories()[abi.ExportMemory]; !ok {
		reasons = append(reasons, "does not export its memory as "+abi.ExportMemory)
	}
	exports := c.ExportedFunctions()
	expect := func(name, want string, required bool) bool {
		d, ok := exports[name]
		if !ok {
			if required {
				reasons = append(reasons, "missing export "+name+" "+want)
			}
			return false
		}
		if got := sig(d); got != want {
			reasons = append(reasons, fmt.Sprintf("export %s has signature %s, want %s", name, got, want))
			return false
		}
		return true
	}
	expect(abi.ExportVersion, "()->(i32)", true)
	expect(abi.ExportAlloc, "(i32)->(i32)", true)
	hasInit = expect(abi.ExportInitialize, "()->()", false)
	expect(abi.ExportMinor, "()->(i32)", false)
	for _, hk := range abi.Hooks() {
		if hk.IsPolicy() != (kind == KindPolicy) {
			continue
		}
		if expect(hk.Export(), "(i32,i32)->(i64)", false) {
			hooks = append(hooks, hk)
		}
	}
	if len(hooks) == 0 {
		var names []string
		for _, hk := range abi.Hooks() {
			if hk.IsPolicy() == (kind == KindPolicy) {
				names = append(names, hk.Export())
			}
		}
		reasons = append(reasons, "exports no "+kind.String()+" hook (one of "+strings.Join(names, ", ")+")")
	}
	sort.Strings(reasons)
	return hooks, hasInit, reasons
}

// instantiate creates an instance, runs its initialiser and checks its
// version marker, all under the host's InitTimeout (not the deadline of
// the call that needs the instance: a slow start is not a failure).
func (m *Module) instantiate(ctx context.Context) (*instance, error) {
	st := &callState{inst: newInstanceState(), module: m}
	ictx, cancel := context.WithTimeout(withCallState(context.WithoutCancel(ctx), st), m.host.cfg.InitTimeout)
	defer cancel()
	defer st.flush()
	mod, err := m.rt.rt.InstantiateModule(ictx, m.compiled, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		return nil, fmt.Errorf("instantiate: %w", err)
	}
	fail := func(what string, err error) (*instance, error) {
		_ = mod.Close(ctx)
		if out := strings.TrimSpace(st.captured()); out != "" {
			return nil, fmt.Errorf("%s: %w (guest output: %s)", what, err, out)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if m.hasInit {
		if _, err := mod.ExportedFunction(abi.ExportInitialize).Call(ictx); err != nil {
			return fail(abi.ExportInitialize, err)
		}
	}
	res, err := mod.ExportedFunction(abi.ExportVersion).Call(ictx)
	if err != nil {
		return fail(abi.ExportVersion, err)
	}
	if v := uint32(res[0]); v != abi.Version {
		return fail(abi.ExportVersion, fmt.Errorf("module speaks ABI version %d, the host version %d", v, abi.Version))
	}
	inst := &instance{mod: mod, alloc: mod.ExportedFunction(abi.ExportAlloc), hooks: map[abi.Hook]api.Function{}, state: st.inst}
	if m.hasMinor {
		res, err := mod.ExportedFunction(abi.ExportMinor).Call(ictx)
		if err != nil {
			return fail(abi.ExportMinor, err)
		}
		// A module newer than the host speaks the host's minor.
		inst.minor = min(uint32(res[0]), abi.Minor)
	}
	for hk := range m.hooks {
		inst.hooks[hk] = mod.ExportedFunction(hk.Export())
	}
	return inst, nil
}

// errBusy is returned when no instance could be had before the deadline.
var errBusy = errors.New("wasmhost: every instance of the module is busy")

// acquire takes an idle instance or instantiates one, waiting while
// MaxInstances are in use.
func (m *Module) acquire(ctx context.Context) (*instance, error) {
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, errBusy
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		<-m.sem
		return nil, ErrClosed
	}
	if n := len(m.idle); n > 0 {
		inst := m.idle[n-1]
		m.idle = m.idle[:n-1]
		m.mu.Unlock()
		return inst, nil
	}
	m.mu.Unlock()
	inst, err := m.instantiate(ctx)
	if err != nil {
		<-m.sem
		return nil, err
	}
	m.host.metrics.instantiated(m.info.Label)
	return inst, nil
}

// release returns inst to the pool, or discards it when the call failed,
// the pool is full or the module is closed.
func (m *Module) release(ctx context.Context, inst *instance, ok bool) {
	defer func() { <-m.sem }()
	if mem := inst.mod.Memory(); mem != nil {
		m.peakPages.observe(uint64(mem.Size() / 65536))
	}
	m.mu.Lock()
	if ok && !m.closed && len(m.idle) < m.host.cfg.MaxIdle && !inst.mod.IsClosed() {
		m.idle = append(m.idle, inst)
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	_ = inst.mod.Close(context.WithoutCancel(ctx))
	if !ok {
		m.host.metrics.discarded(m.info.Label)
	}
}

func (m *Module) guestLog(level int, msg string) {
	if !m.logs.allow(m.host.cfg.Now()) {
		m.host.metrics.logDropped(m.info.Label)
		return
	}
	if len(msg) > maxLogLine {
		msg = msg[:maxLogLine]
	}
	m.host.cfg.Logger.Log(context.Background(), slogLevel(level), msg,
		"wasm_module", m.info.Label, "tenant", m.info.Tenant)
}

func (m *Module) guestCount(name string, delta int64) {
	m.cmu.Lock()
	if _, ok := m.counters[name]; !ok && len(m.counters) >= maxCounterNames {
		m.cmu.Unlock()
		return
	}
	m.counters[name] += delta
	m.cmu.Unlock()
	m.host.metrics.guestCounter(m.info.Label, name, delta)
}

// PeakMemoryPages returns the largest memory (in 64 KiB pages) any of
// the module's instances had at the end of a call.
func (m *Module) PeakMemoryPages() uint64 { return m.peakPages.load() }

// atomicMax keeps the largest value observed.
type atomicMax struct {
	mu sync.Mutex
	v  uint64
}

func (a *atomicMax) observe(v uint64) {
	a.mu.Lock()
	if v > a.v {
		a.v = v
	}
	a.mu.Unlock()
}

func (a *atomicMax) load() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.v
}

// Counters returns a copy of the module's guest counters.
func (m *Module) Counters() map[string]int64 {
	m.cmu.Lock()
	defer m.cmu.Unlock()
	out := make(map[string]int64, len(m.counters))
	for k, v := range m.counters {
		out[k] = v
	}
	return out
}
