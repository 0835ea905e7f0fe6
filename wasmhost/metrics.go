package wasmhost

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-project/kiln/wasmhost/abi"
)

// DurationBuckets are the upper bounds (seconds) of the call duration
// histogram.
func DurationBuckets() []float64 {
	return []float64{1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 5}
}

type callKey struct {
	module string
	hook   abi.Hook
	result Result
}

type durKey struct {
	module string
	hook   abi.Hook
}

type histogram struct {
	counts []uint64 // per bucket (not cumulative), plus +Inf at the end
	sum    float64
	count  uint64
}

// Metrics counts every call by module, hook and result, times calls per
// module and hook, and keeps the guests' own counters. It renders the
// Prometheus text format (WritePrometheus) for the gateway's /metrics and
// offers a snapshot (Calls) for tests and the API.
type Metrics struct {
	mu         sync.Mutex
	calls      map[callKey]uint64
	durations  map[durKey]*histogram
	guest      map[[2]string]int64
	logDrops   map[string]uint64
	instances  map[string]uint64
	discards   map[string]uint64
	abandoned  map[string]uint64 // compilations abandoned, by reason
	bucketsSec []float64
}

func newMetrics() *Metrics {
	return &Metrics{
		calls:      map[callKey]uint64{},
		durations:  map[durKey]*histogram{},
		guest:      map[[2]string]int64{},
		logDrops:   map[string]uint64{},
		instances:  map[string]uint64{},
		discards:   map[string]uint64{},
		abandoned:  map[string]uint64{},
		bucketsSec: DurationBuckets(),
	}
}

func (m *Metrics) compileAbandoned(reason string) {
	m.mu.Lock()
	m.abandoned[reason]++
	m.mu.Unlock()
}

// CompilesAbandoned returns how many compilations were abandoned for
// reason ("canceled" or "timeout").
func (m *Metrics) CompilesAbandoned(reason string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.abandoned[reason]
}

func (m *Metrics) observe(module string, hook abi.Hook, r Result, d time.Duration) {
	sec := d.Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[callKey{module, hook, r}]++
	k := durKey{module, hook}
	h := m.durations[k]
	if h == nil {
		h = &histogram{counts: make([]uint64, len(m.bucketsSec)+1)}
		m.durations[k] = h
	}
	i := sort.SearchFloat64s(m.bucketsSec, sec)
	h.counts[i]++
	h.sum += sec
	h.count++
}

func (m *Metrics) guestCounter(module, name string, delta int64) {
	m.mu.Lock()
	m.guest[[2]string{module, name}] += delta
	m.mu.Unlock()
}

func (m *Metrics) logDropped(module string) {
	m.mu.Lock()
	m.logDrops[module]++
	m.mu.Unlock()
}

func (m *Metrics) instantiated(module string) {
	m.mu.Lock()
	m.instances[module]++
	m.mu.Unlock()
}

func (m *Metrics) discarded(module string) {
	m.mu.Lock()
	m.discards[module]++
	m.mu.Unlock()
}

// Calls returns the number of calls of module's hook that ended with r.
func (m *Metrics) Calls(module string, hook abi.Hook, r Result) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[callKey{module, hook, r}]
}

// Discards returns how many of module's instances were discarded after a
// failure.
func (m *Metrics) Discards(module string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.discards[module]
}

// CallStat is one row of the call counters.
type CallStat struct {
	Module string   `json:"module"`
	Hook   abi.Hook `json:"hook"`
	Result Result   `json:"result"`
	Count  uint64   `json:"count"`
}

// Snapshot returns every call counter, sorted.
func (m *Metrics) Snapshot() []CallStat {
	m.mu.Lock()
	out := make([]CallStat, 0, len(m.calls))
	for k, v := range m.calls {
		out = append(out, CallStat{k.module, k.hook, k.result, v})
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Module != b.Module {
			return a.Module < b.Module
		}
		if a.Hook != b.Hook {
			return a.Hook < b.Hook
		}
		return a.Result < b.Result
	})
	return out
}

func label(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

func float(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// WritePrometheus writes every metric in the Prometheus text exposition
// format (version 0.0.4):
//
//	kiln_wasm_calls_total{module,hook,result}          counter
//	kiln_wasm_call_duration_seconds{module,hook}       histogram
//	kiln_wasm_instances_created_total{module}          counter
//	kiln_wasm_instances_discarded_total{module}        counter
//	kiln_wasm_log_lines_dropped_total{module}          counter
//	kiln_wasm_guest_counter{module,name}               gauge (guest-defined)
func (m *Metrics) WritePrometheus(w io.Writer) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	bw := bufio.NewWriter(w)

	fmt.Fprintln(bw, "# HELP kiln_wasm_calls_total Calls into Wasm modules by module, hook and result (every result but ok fell back to the native default).")
	fmt.Fprintln(bw, "# TYPE kiln_wasm_calls_total counter")
	keys := make([]callKey, 0, len(m.calls))
	for k := range m.calls {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.module != b.module {
			return a.module < b.module
		}
		if a.hook != b.hook {
			return a.hook < b.hook
		}
		return a.result < b.result
	})
	for _, k := range keys {
		fmt.Fprintf(bw, "kiln_wasm_calls_total{module=%s,hook=%s,result=%s} %d\n", label(k.module), label(string(k.hook)), label(string(k.result)), m.calls[k])
	}

	fmt.Fprintln(bw, "# HELP kiln_wasm_call_duration_seconds Wall time of calls into Wasm modules, encoding included.")
	fmt.Fprintln(bw, "# TYPE kiln_wasm_call_duration_seconds histogram")
	dks := make([]durKey, 0, len(m.durations))
	for k := range m.durations {
		dks = append(dks, k)
	}
	sort.Slice(dks, func(i, j int) bool {
		if dks[i].module != dks[j].module {
			return dks[i].module < dks[j].module
		}
		return dks[i].hook < dks[j].hook
	})
	for _, k := range dks {
		h := m.durations[k]
		lbl := "module=" + label(k.module) + ",hook=" + label(string(k.hook))
		var cum uint64
		for i, le := range m.bucketsSec {
			cum += h.counts[i]
			fmt.Fprintf(bw, "kiln_wasm_call_duration_seconds_bucket{%s,le=%s} %d\n", lbl, label(float(le)), cum)
		}
		cum += h.counts[len(m.bucketsSec)]
		fmt.Fprintf(bw, "kiln_wasm_call_duration_seconds_bucket{%s,le=\"+Inf\"} %d\n", lbl, cum)
		fmt.Fprintf(bw, "kiln_wasm_call_duration_seconds_sum{%s} %s\n", lbl, float(h.sum))
		fmt.Fprintf(bw, "kiln_wasm_call_duration_seconds_count{%s} %d\n", lbl, h.count)
	}

	writeModuleCounter := func(name, help string, vals map[string]uint64) {
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s counter\n", name, help, name)
		mods := make([]string, 0, len(vals))
		for k := range vals {
			mods = append(mods, k)
		}
		sort.Strings(mods)
		for _, mod := range mods {
			fmt.Fprintf(bw, "%s{module=%s} %d\n", name, label(mod), vals[mod])
		}
	}
	writeModuleCounter("kiln_wasm_instances_created_total", "Wasm instances created beyond the first of each module.", m.instances)
	writeModuleCounter("kiln_wasm_instances_discarded_total", "Wasm instances discarded after a failed call.", m.discards)
	writeModuleCounter("kiln_wasm_log_lines_dropped_total", "Guest log lines dropped by the rate limit.", m.logDrops)

	fmt.Fprintln(bw, "# HELP kiln_wasm_compiles_abandoned_total Compilations whose caller went away (canceled) or waited too long (timeout).")
	fmt.Fprintln(bw, "# TYPE kiln_wasm_compiles_abandoned_total counter")
	for _, reason := range []string{"canceled", "timeout"} {
		fmt.Fprintf(bw, "kiln_wasm_compiles_abandoned_total{reason=%s} %d\n", label(reason), m.abandoned[reason])
	}

	fmt.Fprintln(bw, "# HELP kiln_wasm_guest_counter Counters kept by Wasm guests through the counter_add host function.")
	fmt.Fprintln(bw, "# TYPE kiln_wasm_guest_counter gauge")
	gks := make([][2]string, 0, len(m.guest))
	for k := range m.guest {
		gks = append(gks, k)
	}
	sort.Slice(gks, func(i, j int) bool {
		if gks[i][0] != gks[j][0] {
			return gks[i][0] < gks[j][0]
		}
		return gks[i][1] < gks[j][1]
	})
	for _, k := range gks {
		fmt.Fprintf(bw, "kiln_wasm_guest_counter{module=%s,name=%s} %d\n", label(k[0]), label(k[1]), m.guest[k])
	}
	return bw.Flush()
}
