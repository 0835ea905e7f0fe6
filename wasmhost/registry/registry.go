// Package registry stores versioned Wasm policies and nodes in a blob
// store, validates them at upload (static ABI checks and the conformance
// dry run under time and memory budgets), activates them per slot with
// rollback, runs candidates in shadow mode, and answers the hot-path
// questions (batching, eviction, quality, node chains) with the active
// module, the built-in module, or the native default, in that order.
//
// Slots: each policy kind has one slot per scope (the operator's scope
// for batching and eviction; the operator's and each tenant's for
// quality); each node name has one slot per tenant. A slot holds the
// active (name, version), the history of previous actives for rollback,
// and optionally a shadow candidate.
package registry

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-project/kiln/wasmhost"
	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/kiln-project/kiln/wasmhost/conformance"
)

// Kind is what a slot holds: one of the policy hooks, or a node.
type Kind string

// Slot kinds.
const (
	KindBatching Kind = "batching"
	KindEviction Kind = "eviction"
	KindQuality  Kind = "quality"
	KindNode     Kind = "node"
)

// ParseKind parses a policy hook name or "node".
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case KindBatching, KindEviction, KindQuality, KindNode:
		return k, nil
	}
	return "", fmt.Errorf("registry: unknown kind %q (batching, eviction, quality or node)", s)
}

// Hook is the ABI hook a policy kind calls.
func (k Kind) Hook() abi.Hook { return abi.Hook(k) }

// OperatorOnly reports whether only the operator may fill the kind's slot.
func (k Kind) OperatorOnly() bool { return k == KindBatching || k == KindEviction }

func (k Kind) moduleKind() wasmhost.Kind {
	if k == KindNode {
		return wasmhost.KindNode
	}
	return wasmhost.KindPolicy
}

// Ref names one stored version of a module.
type Ref struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
}

// String returns name@vN.
func (r Ref) String() string { return r.Name + "@v" + strconv.Itoa(r.Version) }

// Version describes one stored version.
type Version struct {
	Version     int        `json:"version"`
	SHA256      string     `json:"sha256"`
	Size        int        `json:"size"`
	Hooks       []abi.Hook `json:"hooks"`
	Uploaded    time.Time  `json:"uploaded"`
	Checks      int        `json:"conformance_checks"`
	SlowestCall string     `json:"conformance_slowest_call"`
	PeakMemory  uint64     `json:"conformance_peak_memory_pages"`
}

// Mode says what an upload does besides storing the version.
type Mode string

// Upload modes.
const (
	ModeStore    Mode = ""         // store only
	ModeActivate Mode = "activate" // store and make active
	ModeShadow   Mode = "shadow"   // store and run as the slot's shadow candidate
)

// ParseMode parses an upload mode ("", "store", "activate", "shadow").
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "store":
		return ModeStore, nil
	case "activate", "active":
		return ModeActivate, nil
	case "shadow":
		return ModeShadow, nil
	}
	return "", fmt.Errorf("registry: unknown mode %q (store, activate or shadow)", s)
}

// Errors the API maps to statuses.
var (
	// ErrForbidden: the scope may not use the kind (a tenant uploading a
	// batching or eviction policy) or the name is reserved.
	ErrForbidden = errors.New("registry: forbidden")
	// ErrInvalid: a malformed name or argument.
	ErrInvalid = errors.New("registry: invalid request")
	// ErrNoPrevious: rollback with nothing to roll back.
	ErrNoPrevious = errors.New("registry: nothing to roll back")
)

// RejectedError is returned for a module that failed validation.
type RejectedError struct {
	Reasons []string
	Report  *conformance.Report
}

// Error lists every reason the upload was rejected.
func (e *RejectedError) Error() string {
	return "registry: module rejected: " + strings.Join(e.Reasons, "; ")
}

// Config configures a Registry.
type Config struct {
	// Store holds modules and state (required).
	Store Store
	// Host runs the modules (required). Its Config().Natives say which
	// node names are built in.
	Host *wasmhost.Host
	// BuiltinPolicies and BuiltinNodes are the modules that answer when
	// no module is active (required; the composition root passes Kiln's
	// embedded policies/ and nodes-wasm/ modules).
	BuiltinPolicies, BuiltinNodes Builtin
	// CacheDir is the conformance host's compilation cache (usually the
	// serving host's, so that a validated module is compiled once).
	CacheDir string
	// Budgets bound the upload dry run.
	Budgets conformance.Budgets
	// MaxModuleBytes bounds an upload (16 MiB).
	MaxModuleBytes int
	// ShadowConcurrency bounds shadow calls in flight (4); beyond it
	// shadow calls are skipped and counted.
	ShadowConcurrency int
	// CheckedBuiltins runs the built-in modules with wazero's deadline
	// checks like uploaded ones (slower; see wasmhost.Spec.Trusted).
	CheckedBuiltins bool
	// Logger receives registry events (slog.Default()).
	Logger *slog.Logger
	// Now is the clock for upload times (time.Now).
	Now func() time.Time
	// RetireAfter is how long a module that its slot no longer names stays
	// open for calls in flight before it is closed (1 min).
	RetireAfter time.Duration
	// KeepVersions bounds the stored versions of one name (32): after an
	// upload the oldest versions beyond it are deleted from the store,
	// except those the slot still names (active, shadow or in the rollback
	// history).
	KeepVersions int
}

// Builtin is an embedded module the registry loads first.
type Builtin struct {
	// Name is the module's name in logs and metrics.
	Name string
	// Wasm is the module's binary.
	Wasm []byte
}

// Registry is safe for concurrent use.
type Registry struct {
	cfg             Config
	builtinPolicies *wasmhost.Module
	builtinNodes    *wasmhost.Module
	labelKey        []byte // see TenantPseudonym

	mu sync.Mutex // serialises writes (uploads, activation)

	smu     sync.RWMutex
	slots   map[slotKey]*slotState
	modules map[modKey]*wasmhost.Module
	shadows map[slotKey]*shadowStats

	shadowSem chan struct{}
	shadowWG  sync.WaitGroup
}

type slotKey struct {
	scope string
	kind  Kind
	name  string // node name; "" for policies
}

type modKey struct {
	scope string
	kind  Kind
	ref   Ref
}

// slotState is what the store keeps per slot.
type slotState struct {
	Active  *Ref      `json:"active,omitempty"`
	History []Ref     `json:"history,omitempty"`
	Shadow  *Ref      `json:"shadow,omitempty"`
	Updated time.Time `json:"updated"`
}

// New loads the built-in modules and returns a registry over cfg.Store.
func New(ctx context.Context, cfg Config) (*Registry, error) {
	if cfg.Store == nil || cfg.Host == nil {
		return nil, errors.New("registry: Store and Host are required")
	}
	if len(cfg.BuiltinPolicies.Wasm) == 0 || len(cfg.BuiltinNodes.Wasm) == 0 {
		return nil, errors.New("registry: BuiltinPolicies and BuiltinNodes are required")
	}
	if cfg.MaxModuleBytes == 0 {
		cfg.MaxModuleBytes = 16 << 20
	}
	if cfg.ShadowConcurrency == 0 {
		cfg.ShadowConcurrency = 4
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.KeepVersions < 1 {
		cfg.KeepVersions = 32
	}
	if cfg.RetireAfter == 0 {
		cfg.RetireAfter = time.Minute
	}
	bp, err := cfg.Host.Load(ctx, wasmhost.Spec{Name: cfg.BuiltinPolicies.Name, Label: "builtin", Kind: wasmhost.KindPolicy, Trusted: !cfg.CheckedBuiltins}, cfg.BuiltinPolicies.Wasm)
	if err != nil {
		return nil, fmt.Errorf("registry: built-in policies: %w", err)
	}
	bn, err := cfg.Host.Load(ctx, wasmhost.Spec{Name: cfg.BuiltinNodes.Name, Label: "builtin-nodes", Kind: wasmhost.KindNode, Trusted: !cfg.CheckedBuiltins}, cfg.BuiltinNodes.Wasm)
	if err != nil {
		return nil, fmt.Errorf("registry: built-in nodes: %w", err)
	}
	labelKey, err := loadLabelKey(ctx, cfg.Store)
	if err != nil {
		return nil, err
	}
	return &Registry{
		cfg: cfg, builtinPolicies: bp, builtinNodes: bn, labelKey: labelKey,
		slots: map[slotKey]*slotState{}, modules: map[modKey]*wasmhost.Module{}, shadows: map[slotKey]*shadowStats{},
		shadowSem: make(chan struct{}, cfg.ShadowConcurrency),
	}, nil
}

// Close waits for shadow calls in flight and closes the loaded modules.
func (r *Registry) Close(ctx context.Context) error {
	r.shadowWG.Wait()
	r.smu.Lock()
	mods := r.modules
	r.modules = map[modKey]*wasmhost.Module{}
	r.smu.Unlock()
	var errs []error
	for _, m := range mods {
		errs = append(errs, m.Close(ctx))
	}
	errs = append(errs, r.builtinPolicies.Close(ctx), r.builtinNodes.Close(ctx))
	return errors.Join(errs...)
}

// Reload drops the cached slot states so that changes made by other
// processes sharing the store are seen.
func (r *Registry) Reload() {
	r.smu.Lock()
	r.slots = map[slotKey]*slotState{}
	r.smu.Unlock()
}

// Watcher is a Store that reports changes made by other processes.
type Watcher interface {
	Watch(ctx context.Context, changed func(key string)) error
}

// Follow keeps the registry's slot states in step with other processes
// sharing its store (when the store is a Watcher), until ctx ends: every
// change of a slot state drops the cached states.
func (r *Registry) Follow(ctx context.Context) error {
	w, ok := r.cfg.Store.(Watcher)
	if !ok {
		return nil
	}
	return w.Watch(ctx, func(key string) {
		if strings.HasSuffix(key, ".slot.json") {
			r.Reload()
		}
	})
}

// BuiltinPolicies returns the built-in policies module.
func (r *Registry) BuiltinPolicies() *wasmhost.Module { return r.builtinPolicies }

// BuiltinNodes returns the built-in nodes module.
func (r *Registry) BuiltinNodes() *wasmhost.Module { return r.builtinNodes }

// CheckName reports a malformed module or node name: 1 to 64 characters
// of [a-z0-9_-], beginning with a letter or digit.
func CheckName(name string) error {
	if len(name) == 0 || len(name) > 64 {
		return fmt.Errorf("%w: name %q must be 1..64 characters", ErrInvalid, name)
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || (i > 0 && (c == '_' || c == '-'))
		if !ok {
			return fmt.Errorf("%w: name %q: use a-z, 0-9, '_' and '-', beginning with a letter or digit", ErrInvalid, name)
		}
	}
	return nil
}

func scopeKey(scope string) string {
	if scope == "" {
		return "operator"
	}
	return "tenant-" + hex.EncodeToString([]byte(scope))
}

func moduleKey(scope string, kind Kind, ref Ref) string {
	return "v1/" + scopeKey(scope) + "/" + string(kind) + "/" + ref.Name + "/" + strconv.Itoa(ref.Version) + ".wasm"
}

func metaKey(scope string, kind Kind, name string) string {
	return "v1/" + scopeKey(scope) + "/" + string(kind) + "/" + name + "/meta.json"
}

func stateKey(sk slotKey) string {
	n := "_slot"
	if sk.kind == KindNode {
		n = sk.name
	}
	return "v1/" + scopeKey(sk.scope) + "/" + string(sk.kind) + "/" + n + ".slot.json"
}

// check validates a (scope, kind, name) triple for writing.
func (r *Registry) check(scope string, kind Kind, name string) error {
	if _, err := ParseKind(string(kind)); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if scope != "" && kind.OperatorOnly() {
		return fmt.Errorf("%w: %s policies are the operator's", ErrForbidden, kind)
	}
	if err := CheckName(name); err != nil {
		return err
	}
	if kind == KindNode {
		if _, ok := r.cfg.Host.Config().Natives.Hook(name); ok {
			return fmt.Errorf("%w: %q is a built-in node", ErrForbidden, name)
		}
	}
	switch name {
	case "builtin", "rollback", "shadow", "activate":
		return fmt.Errorf("%w: %q is reserved", ErrForbidden, name)
	}
	return nil
}

type meta struct {
	Versions []Version `json:"versions"`
}

func (r *Registry) loadMeta(ctx context.Context, scope string, kind Kind, name string) (meta, error) {
	var m meta
	b, err := r.cfg.Store.Get(ctx, metaKey(scope, kind, name))
	if errors.Is(err, ErrNotFound) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("registry: %s: %w", metaKey(scope, kind, name), err)
	}
	return m, nil
}

// UploadRequest is one module upload.
type UploadRequest struct {
	Scope string // "" = operator; otherwise the tenant
	Kind  Kind
	Name  string
	Wasm  []byte
	Mode  Mode
}

// Upload validates req.Wasm (ABI checks and the conformance dry run
// within the budgets) and stores it as the next version of its name,
// then activates it or makes it the slot's shadow as req.Mode says. A
// module that fails returns a *RejectedError with the reasons.
func (r *Registry) Upload(ctx context.Context, req UploadRequest) (*Version, error) {
	if err := r.check(req.Scope, req.Kind, req.Name); err != nil {
		return nil, err
	}
	if len(req.Wasm) > r.cfg.MaxModuleBytes {
		return nil, &RejectedError{Reasons: []string{fmt.Sprintf("module of %d bytes exceeds the limit of %d", len(req.Wasm), r.cfg.MaxModuleBytes)}}
	}
	mk := req.Kind.moduleKind()
	rep, err := conformance.Test(ctx, req.Name, req.Wasm, conformance.Options{Budgets: r.cfg.Budgets, CacheDir: r.cfg.CacheDir, Kind: &mk, Gate: r.cfg.Host.Gate()})
	if err != nil {
		return nil, fmt.Errorf("registry: conformance run: %w", err)
	}
	if !rep.Passed {
		return nil, &RejectedError{Reasons: rep.Failures(), Report: rep}
	}
	hooks := rep.Module.Hooks
	if req.Kind != KindNode && !hasHook(hooks, req.Kind.Hook()) {
		return nil, &RejectedError{Reasons: []string{fmt.Sprintf("uploaded as a %s policy but does not export %s", req.Kind, req.Kind.Hook().Export())}, Report: rep}
	}
	var slowest time.Duration
	for _, c := range rep.Checks {
		slowest = max(slowest, c.Duration)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	m, err := r.loadMeta(ctx, req.Scope, req.Kind, req.Name)
	if err != nil {
		return nil, err
	}
	v := Version{Version: 1, SHA256: rep.Module.SHA256, Size: len(req.Wasm), Hooks: hooks, Uploaded: r.cfg.Now().UTC(),
		Checks: len(rep.Checks), SlowestCall: slowest.String(), PeakMemory: rep.PeakMem}
	if n := len(m.Versions); n > 0 {
		v.Version = m.Versions[n-1].Version + 1
	}
	ref := Ref{Name: req.Name, Version: v.Version}
	if err := r.cfg.Store.Put(ctx, moduleKey(req.Scope, req.Kind, ref), req.Wasm); err != nil {
		return nil, err
	}
	m.Versions = append(m.Versions, v)
	b, _ := json.Marshal(m)
	if err := r.cfg.Store.Put(ctx, metaKey(req.Scope, req.Kind, req.Name), b); err != nil {
		return nil, err
	}
	sk := r.slotFor(req.Scope, req.Kind, req.Name)
	switch req.Mode {
	case ModeActivate:
		err = r.activateLocked(ctx, sk, ref)
	case ModeShadow:
		err = r.setShadowLocked(ctx, sk, &ref)
	}
	if err != nil {
		return nil, err
	}
	if err := r.pruneLocked(ctx, req.Scope, req.Kind, req.Name, sk); err != nil {
		// The new version is stored and in effect; an old one left behind
		// is pruned by the next upload.
		r.cfg.Logger.Warn("wasm registry: pruning old versions", "scope", req.Scope, "kind", req.Kind, "name", req.Name, "error", err)
	}
	r.cfg.Logger.Info("wasm module stored", "scope", req.Scope, "kind", req.Kind, "module", ref.String(), "mode", string(req.Mode), "sha256", v.SHA256)
	return &v, nil
}

// pruneLocked deletes the oldest stored versions of name beyond
// KeepVersions, keeping every version its slot names (r.mu held). The
// metadata is rewritten first, so that a failure part-way leaves at worst
// an unlisted module file, never a listed version without its module.
func (r *Registry) pruneLocked(ctx context.Context, scope string, kind Kind, name string, sk slotKey) error {
	m, err := r.loadMeta(ctx, scope, kind, name)
	if err != nil {
		return err
	}
	excess := len(m.Versions) - r.cfg.KeepVersions
	if excess <= 0 {
		return nil
	}
	st, err := r.state(ctx, sk)
	if err != nil {
		return err
	}
	named := map[Ref]bool{}
	for _, ref := range st.History {
		named[ref] = true
	}
	for _, ref := range []*Ref{st.Active, st.Shadow} {
		if ref != nil {
			named[*ref] = true
		}
	}
	var kept []Version
	var dropped []Ref
	for _, v := range m.Versions {
		ref := Ref{Name: name, Version: v.Version}
		if excess > 0 && !named[ref] {
			dropped = append(dropped, ref)
			excess--
			continue
		}
		kept = append(kept, v)
	}
	if len(dropped) == 0 {
		return nil
	}
	m.Versions = kept
	b, _ := json.Marshal(m)
	if err := r.cfg.Store.Put(ctx, metaKey(scope, kind, name), b); err != nil {
		return err
	}
	var errs []error
	for _, ref := range dropped {
		if err := r.cfg.Store.Delete(ctx, moduleKey(scope, kind, ref)); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", ref, err))
		}
	}
	return errors.Join(errs...)
}

func hasHook(hs []abi.Hook, h abi.Hook) bool {
	for _, x := range hs {
		if x == h {
			return true
		}
	}
	return false
}

func (r *Registry) slotFor(scope string, kind Kind, name string) slotKey {
	if kind == KindNode {
		return slotKey{scope, kind, name}
	}
	return slotKey{scope: scope, kind: kind}
}

// state returns the slot's state, reading it from the store on first use.
func (r *Registry) state(ctx context.Context, sk slotKey) (*slotState, error) {
	r.smu.RLock()
	st, ok := r.slots[sk]
	r.smu.RUnlock()
	if ok {
		return st, nil
	}
	st = &slotState{}
	b, err := r.cfg.Store.Get(ctx, stateKey(sk))
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal(b, st); err != nil {
			return nil, fmt.Errorf("registry: %s: %w", stateKey(sk), err)
		}
	}
	r.smu.Lock()
	if cur, ok := r.slots[sk]; ok {
		st = cur
	} else {
		r.slots[sk] = st
	}
	r.smu.Unlock()
	return st, nil
}

// saveLocked writes a new state for the slot (r.mu held). States are
// replaced, never mutated, so readers need no lock beyond the map's.
func (r *Registry) saveLocked(ctx context.Context, sk slotKey, st *slotState) error {
	st.Updated = r.cfg.Now().UTC()
	b, _ := json.Marshal(st)
	if err := r.cfg.Store.Put(ctx, stateKey(sk), b); err != nil {
		return err
	}
	r.smu.Lock()
	r.slots[sk] = st
	stale := r.unreferencedLocked(sk, st)
	r.smu.Unlock()
	for _, m := range stale {
		// Calls in flight may still hold the module: close it once they
		// are long over. A later rollback loads it again from the store.
		time.AfterFunc(r.cfg.RetireAfter, func() { _ = m.Close(context.Background()) })
	}
	return nil
}

// unreferencedLocked drops from the loaded modules those of the slot that
// its new state no longer names (neither active nor shadow), so that
// replaced versions do not stay in memory (r.smu held).
func (r *Registry) unreferencedLocked(sk slotKey, st *slotState) []*wasmhost.Module {
	var out []*wasmhost.Module
	for k, m := range r.modules {
		if k.scope != sk.scope || k.kind != sk.kind || (sk.kind == KindNode && k.ref.Name != sk.name) {
			continue
		}
		if (st.Active != nil && *st.Active == k.ref) || (st.Shadow != nil && *st.Shadow == k.ref) {
			continue
		}
		delete(r.modules, k)
		out = append(out, m)
	}
	return out
}

func (r *Registry) versionExists(ctx context.Context, scope string, kind Kind, ref Ref) error {
	m, err := r.loadMeta(ctx, scope, kind, ref.Name)
	if err != nil {
		return err
	}
	for _, v := range m.Versions {
		if v.Version == ref.Version {
			return nil
		}
	}
	return fmt.Errorf("registry: %s %s: %w", kind, ref, ErrNotFound)
}

func copyState(st *slotState) *slotState {
	c := *st
	c.History = append([]Ref(nil), st.History...)
	return &c
}

func (r *Registry) activateLocked(ctx context.Context, sk slotKey, ref Ref) error {
	if err := r.versionExists(ctx, sk.scope, sk.kind, ref); err != nil {
		return err
	}
	// Load it now: a module that cannot be loaded is not activated.
	if _, err := r.module(ctx, sk.scope, sk.kind, ref); err != nil {
		return err
	}
	cur, err := r.state(ctx, sk)
	if err != nil {
		return err
	}
	st := copyState(cur)
	if st.Active != nil && *st.Active == ref {
		return nil
	}
	if st.Active != nil {
		st.History = append(st.History, *st.Active)
		if len(st.History) > 32 {
			st.History = st.History[len(st.History)-32:]
		}
	}
	st.Active = &ref
	if st.Shadow != nil && *st.Shadow == ref {
		st.Shadow = nil
	}
	return r.saveLocked(ctx, sk, st)
}

// Activate makes ref the active module of its slot; the previous active
// one can be restored with Rollback.
func (r *Registry) Activate(ctx context.Context, scope string, kind Kind, ref Ref) error {
	if err := r.check(scope, kind, ref.Name); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.activateLocked(ctx, r.slotFor(scope, kind, ref.Name), ref); err != nil {
		return err
	}
	r.cfg.Logger.Info("wasm module activated", "scope", scope, "kind", kind, "module", ref.String())
	return nil
}

// Rollback restores the slot's previous active module, or the built-in
// default when there was none. slotName is the node name for nodes and
// ignored for policies.
func (r *Registry) Rollback(ctx context.Context, scope string, kind Kind, slotName string) (*Ref, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sk := r.slotFor(scope, kind, slotName)
	cur, err := r.state(ctx, sk)
	if err != nil {
		return nil, err
	}
	if cur.Active == nil {
		return nil, ErrNoPrevious
	}
	st := copyState(cur)
	st.Active = nil
	if n := len(st.History); n > 0 {
		prev := st.History[n-1]
		st.History = st.History[:n-1]
		st.Active = &prev
	}
	if err := r.saveLocked(ctx, sk, st); err != nil {
		return nil, err
	}
	r.cfg.Logger.Info("wasm slot rolled back", "scope", scope, "kind", kind, "slot", slotName, "active", st.Active)
	return st.Active, nil
}

// Deactivate returns the slot to the built-in default (the current
// module goes to the history, so Rollback restores it).
func (r *Registry) Deactivate(ctx context.Context, scope string, kind Kind, slotName string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	sk := r.slotFor(scope, kind, slotName)
	cur, err := r.state(ctx, sk)
	if err != nil {
		return err
	}
	if cur.Active == nil {
		return nil
	}
	st := copyState(cur)
	st.History = append(st.History, *st.Active)
	st.Active = nil
	return r.saveLocked(ctx, sk, st)
}

func (r *Registry) setShadowLocked(ctx context.Context, sk slotKey, ref *Ref) error {
	if sk.kind == KindNode {
		return fmt.Errorf("%w: shadow mode is for policies", ErrInvalid)
	}
	if ref != nil {
		if err := r.versionExists(ctx, sk.scope, sk.kind, *ref); err != nil {
			return err
		}
		if _, err := r.module(ctx, sk.scope, sk.kind, *ref); err != nil {
			return err
		}
	}
	cur, err := r.state(ctx, sk)
	if err != nil {
		return err
	}
	st := copyState(cur)
	st.Shadow = ref
	if err := r.saveLocked(ctx, sk, st); err != nil {
		return err
	}
	r.smu.Lock()
	if ref != nil {
		r.shadows[sk] = newShadowStats(*ref, r.cfg.Now())
	} else {
		delete(r.shadows, sk)
	}
	r.smu.Unlock()
	return nil
}

// SetShadow makes ref the shadow candidate of its policy slot: it sees
// every input the active policy sees, its answers are compared and timed
// but never acted on. A nil ref ends shadow mode.
func (r *Registry) SetShadow(ctx context.Context, scope string, kind Kind, ref *Ref) error {
	if ref != nil {
		if err := r.check(scope, kind, ref.Name); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.setShadowLocked(ctx, r.slotFor(scope, kind, ""), ref)
}

// module returns the loaded module of ref, loading it from the store.
func (r *Registry) module(ctx context.Context, scope string, kind Kind, ref Ref) (*wasmhost.Module, error) {
	key := modKey{scope, kind, ref}
	r.smu.RLock()
	m, ok := r.modules[key]
	r.smu.RUnlock()
	if ok {
		return m, nil
	}
	b, err := r.cfg.Store.Get(ctx, moduleKey(scope, kind, ref))
	if err != nil {
		return nil, err
	}
	lbl := r.label(scope, kind, ref)
	m, err = r.cfg.Host.Load(ctx, wasmhost.Spec{Tenant: scope, Name: ref.String(), Label: lbl, Kind: kind.moduleKind()}, b)
	if err != nil {
		return nil, fmt.Errorf("registry: load %s/%s/%s: %w", scope, kind, ref, err)
	}
	r.smu.Lock()
	if cur, ok := r.modules[key]; ok {
		r.smu.Unlock()
		_ = m.Close(ctx)
		return cur, nil
	}
	r.modules[key] = m
	r.smu.Unlock()
	if scope != "" {
		r.cfg.Logger.Info("wasm module loaded", "tenant", scope, "metrics_label", lbl)
	}
	return m, nil
}

// Versions lists the stored versions of a name.
func (r *Registry) Versions(ctx context.Context, scope string, kind Kind, name string) ([]Version, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	m, err := r.loadMeta(ctx, scope, kind, name)
	if err != nil {
		return nil, err
	}
	return m.Versions, nil
}

// Names lists the names stored in a scope for a kind.
func (r *Registry) Names(ctx context.Context, scope string, kind Kind) ([]string, error) {
	prefix := "v1/" + scopeKey(scope) + "/" + string(kind) + "/"
	keys, err := r.cfg.Store.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, k := range keys {
		rest := strings.TrimPrefix(k, prefix)
		if i := strings.Index(rest, "/"); i > 0 && strings.HasSuffix(rest, "/meta.json") {
			if n := rest[:i]; !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// SlotInfo describes a slot for the API.
type SlotInfo struct {
	Scope   string           `json:"scope,omitempty"`
	Kind    Kind             `json:"kind"`
	Slot    string           `json:"slot,omitempty"`
	Active  *Ref             `json:"active"`
	History []Ref            `json:"history,omitempty"`
	Shadow  *ShadowReport    `json:"shadow,omitempty"`
	Health  *wasmhost.Health `json:"health,omitempty"`
	Updated time.Time        `json:"updated,omitzero"`
}

// Slot describes a slot: its active module (nil = the built-in default),
// history, shadow candidate with its comparison statistics, and the
// active module's health.
func (r *Registry) Slot(ctx context.Context, scope string, kind Kind, slotName string) (*SlotInfo, error) {
	sk := r.slotFor(scope, kind, slotName)
	st, err := r.state(ctx, sk)
	if err != nil {
		return nil, err
	}
	info := &SlotInfo{Scope: scope, Kind: kind, Slot: sk.name, Active: st.Active, History: st.History, Updated: st.Updated}
	if st.Active != nil {
		if m, err := r.module(ctx, scope, kind, *st.Active); err == nil {
			h := m.Health()
			info.Health = &h
		}
	}
	if st.Shadow != nil {
		r.smu.RLock()
		s := r.shadows[sk]
		r.smu.RUnlock()
		rep := ShadowReport{Candidate: *st.Shadow}
		if s != nil && s.candidate == *st.Shadow {
			rep = s.report()
		}
		info.Shadow = &rep
	}
	return info, nil
}

// WriteJSON writes v as indented JSON (a helper for CLIs and tests).
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
