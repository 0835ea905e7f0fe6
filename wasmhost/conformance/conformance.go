// Package conformance is the dry run every Wasm policy and node must pass
// before Kiln accepts it (uploads and `kiln policy test`): for each hook
// the module exports it runs fixed scenarios in a host whose deadline and
// memory cap are the budgets, and requires that every call answers with
// the module's own valid answer (no trap, timeout, out-of-memory, error
// status or answer the ABI's checks refuse), that asking twice gives the
// same answer, and that memory stays within the budget.
package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kiln-project/kiln/wasmhost"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

// Budgets bound a module during the dry run.
type Budgets struct {
	// PolicyCall is the deadline of one policy call (100 ms, the serving
	// host's default deadline: a module that passes fits it).
	PolicyCall time.Duration
	// NodeCall is the deadline of one node call (2 s).
	NodeCall time.Duration
	// PolicyMemoryPages caps a policy's memory (512 pages = 32 MiB).
	PolicyMemoryPages uint32
	// NodeMemoryPages caps a node's memory (2048 pages = 128 MiB).
	NodeMemoryPages uint32
}

func (b Budgets) withDefaults() Budgets {
	if b.PolicyCall == 0 {
		b.PolicyCall = 100 * time.Millisecond
	}
	if b.NodeCall == 0 {
		b.NodeCall = 2 * time.Second
	}
	if b.PolicyMemoryPages == 0 {
		b.PolicyMemoryPages = 512
	}
	if b.NodeMemoryPages == 0 {
		b.NodeMemoryPages = 2048
	}
	return b
}

// Options configure a run.
type Options struct {
	Budgets Budgets
	// CacheDir is the compilation cache directory ("" = in memory).
	CacheDir string
	// Kind is the module's kind; when unset Test tries policy, then node.
	Kind *wasmhost.Kind
	// Logger receives the module's logs (discarded when nil).
	Logger *slog.Logger
	// Gate bounds concurrent compilations; pass the serving host's so that
	// upload checks share its compilers (nil: a gate of the test's own).
	Gate *wasmhost.CompileGate
}

// Check is one scenario's result.
type Check struct {
	Hook     abi.Hook        `json:"hook"`
	Scenario string          `json:"scenario"`
	Result   wasmhost.Result `json:"result"`
	Duration time.Duration   `json:"-"`
	Pass     bool            `json:"pass"`
	Problem  string          `json:"problem,omitempty"`
}

// MarshalJSON writes the check with its duration in seconds.
func (c Check) MarshalJSON() ([]byte, error) {
	type plain Check
	return json.Marshal(struct {
		plain
		Seconds float64 `json:"duration_s"`
	}{plain(c), c.Duration.Seconds()})
}

// MarshalJSON writes the budgets with durations in seconds.
func (b Budgets) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		PolicyCall        float64 `json:"policy_call_s"`
		NodeCall          float64 `json:"node_call_s"`
		PolicyMemoryPages uint32  `json:"policy_memory_pages"`
		NodeMemoryPages   uint32  `json:"node_memory_pages"`
	}{b.PolicyCall.Seconds(), b.NodeCall.Seconds(), b.PolicyMemoryPages, b.NodeMemoryPages})
}

// Report is the outcome of a conformance run.
type Report struct {
	Module   wasmhost.Info `json:"module"`
	Budgets  Budgets       `json:"budgets"`
	Checks   []Check       `json:"checks"`
	PeakMem  uint64        `json:"peak_memory_pages"`
	Rejected []string      `json:"rejected,omitempty"` // load-time reasons
	Passed   bool          `json:"passed"`
}

// Failures lists the problems of the failed checks (and load reasons).
func (r *Report) Failures() []string {
	out := append([]string(nil), r.Rejected...)
	for _, c := range r.Checks {
		if !c.Pass {
			out = append(out, fmt.Sprintf("%s/%s: %s", c.Hook, c.Scenario, c.Problem))
		}
	}
	return out
}

// Err returns nil for a passing report, otherwise an error listing why.
func (r *Report) Err() error {
	if r.Passed {
		return nil
	}
	return errors.New("conformance: " + strings.Join(r.Failures(), "; "))
}

// Write prints the report as a table.
func (r *Report) Write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "module\t%s (%d bytes, sha256 %.16s…, kind %s)\n", r.Module.Name, r.Module.Size, r.Module.SHA256, r.Module.Kind)
	for _, reason := range r.Rejected {
		fmt.Fprintf(tw, "REJECTED\t%s\n", reason)
	}
	if len(r.Checks) > 0 {
		fmt.Fprintf(tw, "hooks\t%v\n", r.Module.Hooks)
		fmt.Fprintln(tw, "\nhook\tscenario\tresult\ttime\tverdict")
		for _, c := range r.Checks {
			verdict := "pass"
			if !c.Pass {
				verdict = "FAIL: " + c.Problem
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Hook, c.Scenario, c.Result, c.Duration.Round(time.Microsecond), verdict)
		}
		fmt.Fprintf(tw, "\npeak memory\t%d pages (%.1f MiB)\n", r.PeakMem, float64(r.PeakMem)/16)
	}
	if r.Passed {
		fmt.Fprintln(tw, "PASS")
	} else {
		fmt.Fprintln(tw, "FAIL")
	}
	return tw.Flush()
}

// Test runs the conformance suite over wasm in a host of its own built
// with the budgets. It returns an error only when the suite could not run;
// a module that fails is reported in the Report.
func Test(ctx context.Context, name string, wasm []byte, opts Options) (*Report, error) {
	b := opts.Budgets.withDefaults()
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h, err := wasmhost.New(ctx, wasmhost.Config{
		CacheDir: opts.CacheDir, PolicyMemoryPages: b.PolicyMemoryPages, NodeMemoryPages: b.NodeMemoryPages,
		PolicyTimeout: b.PolicyCall, NodeTimeout: b.NodeCall, InitTimeout: 10 * b.NodeCall,
		FailureThreshold: 1 << 30, Logger: logger, MaxIdle: 1, MaxInstances: 1, Gate: opts.Gate,
	})
	if err != nil {
		return nil, err
	}
	defer h.Close(context.WithoutCancel(ctx))
	kinds := []wasmhost.Kind{wasmhost.KindPolicy, wasmhost.KindNode}
	if opts.Kind != nil {
		kinds = []wasmhost.Kind{*opts.Kind}
	}
	rep := &Report{Budgets: b, Module: wasmhost.Info{Name: name, Size: len(wasm)}}
	var m *wasmhost.Module
	for i, k := range kinds {
		m, err = h.Load(ctx, wasmhost.Spec{Name: name, Kind: k}, wasm)
		if err == nil {
			break
		}
		var ve *wasmhost.ValidationError
		if !errors.As(err, &ve) {
			return nil, err
		}
		// Report the reasons of the kind asked for, or of the last kind tried.
		if opts.Kind != nil || i == len(kinds)-1 {
			rep.Rejected = ve.Reasons
			rep.Module.Kind = k.String()
		}
	}
	if m == nil {
		return rep, nil
	}
	defer m.Close(context.WithoutCancel(ctx))
	rep.Module = m.Info()
	rep.Checks = Run(ctx, m)
	rep.PeakMem = m.PeakMemoryPages()
	rep.Passed = len(rep.Checks) > 0
	for _, c := range rep.Checks {
		rep.Passed = rep.Passed && c.Pass
	}
	return rep, nil
}

// Run runs every scenario of every hook m implements, each twice.
func Run(ctx context.Context, m *wasmhost.Module) []Check {
	var checks []Check
	for _, hook := range m.Info().Hooks {
		for _, sc := range scenarios(hook) {
			checks = append(checks, runScenario(ctx, m, hook, sc))
		}
	}
	return checks
}

type scenario struct {
	name string
	// call runs the module once and returns its answer.
	call func(ctx context.Context, m *wasmhost.Module) (any, wasmhost.Outcome)
}

func runScenario(ctx context.Context, m *wasmhost.Module, hook abi.Hook, sc scenario) Check {
	c := Check{Hook: hook, Scenario: sc.name}
	first, o := sc.call(ctx, m)
	c.Result, c.Duration = o.Result, o.Duration
	if !o.OK() {
		c.Problem = fmt.Sprintf("%s: %v", o.Result, o.Err)
		return c
	}
	second, o2 := sc.call(ctx, m)
	if !o2.OK() {
		c.Result = o2.Result
		c.Problem = fmt.Sprintf("second call: %s: %v", o2.Result, o2.Err)
		return c
	}
	if o2.Duration > c.Duration {
		c.Duration = o2.Duration
	}
	if !reflect.DeepEqual(first, second) {
		c.Problem = "the same input gave different answers (answers must depend only on the input)"
		return c
	}
	c.Pass = true
	return c
}
