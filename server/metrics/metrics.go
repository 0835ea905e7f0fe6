// Package metrics is a small Prometheus instrumentation library: counters,
// gauges and histograms with labels, and a registry that writes them in the
// Prometheus text exposition format (version 0.0.4). It covers what Kiln
// needs without the client_golang dependency tree.
package metrics

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry holds metric families and writes them out in name order.
type Registry struct {
	mu       sync.Mutex
	families map[string]family
	collects []func(emit func(name, help, typ string, labels []string, values []string, v float64))
	texts    []func(w io.Writer) error
}

// CollectText registers a function called at every scrape that writes
// complete metric families in the text format after the registry's own
// (the Wasm host renders its histograms this way). Its names must not
// clash with the registry's.
func (r *Registry) CollectText(fn func(w io.Writer) error) {
	r.mu.Lock()
	r.texts = append(r.texts, fn)
	r.mu.Unlock()
}

type family interface {
	meta() (name, help, typ string)
	write(w *bufio.Writer)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{families: map[string]family{}} }

func (r *Registry) add(f family) {
	name, _, _ := f.meta()
	if !validName(name) {
		panic(fmt.Sprintf("metrics: invalid metric name %q", name))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.families[name]; dup {
		panic(fmt.Sprintf("metrics: %s registered twice", name))
	}
	r.families[name] = f
}

// Collect registers a function called at every scrape that emits samples
// computed on demand (cache ratios, GPU readings). Each emitted sample
// becomes a gauge or counter named by the call.
func (r *Registry) Collect(fn func(emit func(name, help, typ string, labels []string, values []string, v float64))) {
	r.mu.Lock()
	r.collects = append(r.collects, fn)
	r.mu.Unlock()
}

// WriteTo writes every family in the text exposition format.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	bw := bufio.NewWriter(cw)
	r.mu.Lock()
	fams := make([]family, 0, len(r.families))
	for _, f := range r.families {
		fams = append(fams, f)
	}
	collects := append([]func(emit func(string, string, string, []string, []string, float64)){}, r.collects...)
	texts := append([]func(io.Writer) error{}, r.texts...)
	r.mu.Unlock()

	// Collected samples are grouped into families by name.
	type sample struct {
		labels, values []string
		v              float64
	}
	type cfam struct {
		help, typ string
		samples   []sample
	}
	collected := map[string]*cfam{}
	for _, fn := range collects {
		fn(func(name, help, typ string, labels, values []string, v float64) {
			if !validName(name) || len(labels) != len(values) {
				return
			}
			f := collected[name]
			if f == nil {
				f = &cfam{help: help, typ: typ}
				collected[name] = f
			}
			f.samples = append(f.samples, sample{labels, values, v})
		})
	}
	type entry struct {
		name string
		fam  family
		c    *cfam
	}
	all := make([]entry, 0, len(fams)+len(collected))
	registered := map[string]bool{}
	for _, f := range fams {
		n, _, _ := f.meta()
		registered[n] = true
		all = append(all, entry{name: n, fam: f})
	}
	for n, c := range collected {
		if registered[n] {
			continue
		}
		all = append(all, entry{name: n, c: c})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].name < all[j].name })
	for _, e := range all {
		if e.fam != nil {
			name, help, typ := e.fam.meta()
			writeHeader(bw, name, help, typ)
			e.fam.write(bw)
			continue
		}
		writeHeader(bw, e.name, e.c.help, e.c.typ)
		for _, s := range e.c.samples {
			writeSample(bw, e.name, "", s.labels, s.values, "", "", s.v)
		}
	}
	for _, fn := range texts {
		if err := fn(bw); err != nil {
			return cw.n, err
		}
	}
	err := bw.Flush()
	return cw.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		ok := r == '_' || r == ':' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || (i > 0 && r >= '0' && r <= '9')
		if !ok {
			return false
		}
	}
	return true
}

func writeHeader(w *bufio.Writer, name, help, typ string) {
	w.WriteString("# HELP ")
	w.WriteString(name)
	w.WriteByte(' ')
	w.WriteString(escapeHelp(help))
	w.WriteString("\n# TYPE ")
	w.WriteString(name)
	w.WriteByte(' ')
	w.WriteString(typ)
	w.WriteByte('\n')
}

func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// writeSample writes name{labels...,extraName="extraValue"} v.
func writeSample(w *bufio.Writer, name, suffix string, labels, values []string, extraName, extraValue string, v float64) {
	w.WriteString(name)
	w.WriteString(suffix)
	if len(labels) > 0 || extraName != "" {
		w.WriteByte('{')
		for i, l := range labels {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(l)
			w.WriteString(`="`)
			w.WriteString(escapeLabel(values[i]))
			w.WriteByte('"')
		}
		if extraName != "" {
			if len(labels) > 0 {
				w.WriteByte(',')
			}
			w.WriteString(extraName)
			w.WriteString(`="`)
			w.WriteString(extraValue)
			w.WriteByte('"')
		}
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.WriteString(formatFloat(v))
	w.WriteByte('\n')
}

// vec keeps one child per label-value combination.
type vec[T any] struct {
	name, help string
	labels     []string
	mu         sync.RWMutex
	children   map[string]*child[T]
	newChild   func() *T
}

type child[T any] struct {
	values []string
	m      *T
}

func (v *vec[T]) with(values ...string) *T {
	if len(values) != len(v.labels) {
		panic(fmt.Sprintf("metrics: %s wants %d label values, got %d", v.name, len(v.labels), len(values)))
	}
	key := strings.Join(values, "\xff")
	v.mu.RLock()
	c := v.children[key]
	v.mu.RUnlock()
	if c != nil {
		return c.m
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if c = v.children[key]; c == nil {
		c = &child[T]{values: append([]string(nil), values...), m: v.newChild()}
		v.children[key] = c
	}
	return c.m
}

func (v *vec[T]) sorted() []*child[T] {
	v.mu.RLock()
	keys := make([]string, 0, len(v.children))
	for k := range v.children {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]*child[T], len(keys))
	for i, k := range keys {
		out[i] = v.children[k]
	}
	v.mu.RUnlock()
	return out
}

// Counter is a monotonically increasing value.
type Counter struct{ bits atomic.Uint64 }

// Add increases the counter by d (d ≥ 0).
func (c *Counter) Add(d float64) {
	if d < 0 {
		return
	}
	for {
		old := c.bits.Load()
		if c.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

// Inc adds one.
func (c *Counter) Inc() { c.Add(1) }

// Value returns the current value.
func (c *Counter) Value() float64 { return math.Float64frombits(c.bits.Load()) }

// CounterVec is a family of counters with labels.
type CounterVec struct{ v vec[Counter] }

// NewCounterVec registers a counter family.
func (r *Registry) NewCounterVec(name, help string, labels ...string) *CounterVec {
	c := &CounterVec{v: vec[Counter]{name: name, help: help, labels: labels,
		children: map[string]*child[Counter]{}, newChild: func() *Counter { return &Counter{} }}}
	r.add(c)
	return c
}

// NewCounter registers a counter without labels.
func (r *Registry) NewCounter(name, help string) *Counter {
	return r.NewCounterVec(name, help).With()
}

// With returns the counter for the label values.
func (c *CounterVec) With(values ...string) *Counter { return c.v.with(values...) }

func (c *CounterVec) meta() (string, string, string) { return c.v.name, c.v.help, "counter" }

func (c *CounterVec) write(w *bufio.Writer) {
	for _, ch := range c.v.sorted() {
		writeSample(w, c.v.name, "", c.v.labels, ch.values, "", "", ch.m.Value())
	}
}

// Gauge is a value that goes up and down.
type Gauge struct{ bits atomic.Uint64 }

// Set sets the gauge.
func (g *Gauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }

// Add adds d (which may be negative).
func (g *Gauge) Add(d float64) {
	for {
		old := g.bits.Load()
		if g.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

// Value returns the current value.
func (g *Gauge) Value() float64 { return math.Float64frombits(g.bits.Load()) }

// GaugeVec is a family of gauges with labels.
type GaugeVec struct{ v vec[Gauge] }

// NewGaugeVec registers a gauge family.
func (r *Registry) NewGaugeVec(name, help string, labels ...string) *GaugeVec {
	g := &GaugeVec{v: vec[Gauge]{name: name, help: help, labels: labels,
		children: map[string]*child[Gauge]{}, newChild: func() *Gauge { return &Gauge{} }}}
	r.add(g)
	return g
}

// NewGauge registers a gauge without labels.
func (r *Registry) NewGauge(name, help string) *Gauge { return r.NewGaugeVec(name, help).With() }

// With returns the gauge for the label values.
func (g *GaugeVec) With(values ...string) *Gauge { return g.v.with(values...) }

func (g *GaugeVec) meta() (string, string, string) { return g.v.name, g.v.help, "gauge" }

func (g *GaugeVec) write(w *bufio.Writer) {
	for _, ch := range g.v.sorted() {
		writeSample(w, g.v.name, "", g.v.labels, ch.values, "", "", ch.m.Value())
	}
}

// Histogram counts observations in cumulative buckets.
type Histogram struct {
	bounds []float64
	mu     sync.Mutex
	counts []uint64 // per bucket, not cumulative; last is +Inf
	sum    float64
	count  uint64
}

// Observe records one value.
func (h *Histogram) Observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v)
	h.mu.Lock()
	h.counts[i]++
	h.sum += v
	h.count++
	h.mu.Unlock()
}

// Snapshot returns the cumulative bucket counts, the sum and the count.
func (h *Histogram) Snapshot() (bounds []float64, cumulative []uint64, sum float64, count uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cumulative = make([]uint64, len(h.counts))
	var acc uint64
	for i, c := range h.counts {
		acc += c
		cumulative[i] = acc
	}
	return h.bounds, cumulative, h.sum, h.count
}

// Quantile estimates the q-quantile (0 < q < 1) by linear interpolation
// within the bucket, as Prometheus' histogram_quantile does.
func (h *Histogram) Quantile(q float64) float64 {
	bounds, cum, _, count := h.Snapshot()
	if count == 0 {
		return math.NaN()
	}
	rank := q * float64(count)
	for i, c := range cum {
		if float64(c) >= rank {
			if i == len(bounds) {
				return bounds[len(bounds)-1]
			}
			lo, prev := 0.0, uint64(0)
			if i > 0 {
				lo, prev = bounds[i-1], cum[i-1]
			}
			in := c - prev
			if in == 0 {
				return bounds[i]
			}
			return lo + (bounds[i]-lo)*(rank-float64(prev))/float64(in)
		}
	}
	return bounds[len(bounds)-1]
}

// HistogramVec is a family of histograms with labels.
type HistogramVec struct{ v vec[Histogram] }

// NewHistogramVec registers a histogram family with the given upper bucket
// bounds (sorted ascending; +Inf is implicit).
func (r *Registry) NewHistogramVec(name, help string, buckets []float64, labels ...string) *HistogramVec {
	b := append([]float64(nil), buckets...)
	if !sort.Float64sAreSorted(b) || len(b) == 0 {
		panic(fmt.Sprintf("metrics: %s: buckets must be non-empty and sorted", name))
	}
	h := &HistogramVec{v: vec[Histogram]{name: name, help: help, labels: labels,
		children: map[string]*child[Histogram]{},
		newChild: func() *Histogram { return &Histogram{bounds: b, counts: make([]uint64, len(b)+1)} }}}
	r.add(h)
	return h
}

// NewHistogram registers a histogram without labels.
func (r *Registry) NewHistogram(name, help string, buckets []float64) *Histogram {
	return r.NewHistogramVec(name, help, buckets).With()
}

// With returns the histogram for the label values.
func (h *HistogramVec) With(values ...string) *Histogram { return h.v.with(values...) }

func (h *HistogramVec) meta() (string, string, string) { return h.v.name, h.v.help, "histogram" }

func (h *HistogramVec) write(w *bufio.Writer) {
	for _, ch := range h.v.sorted() {
		bounds, cum, sum, count := ch.m.Snapshot()
		for i, b := range bounds {
			writeSample(w, h.v.name, "_bucket", h.v.labels, ch.values, "le", formatFloat(b), float64(cum[i]))
		}
		writeSample(w, h.v.name, "_bucket", h.v.labels, ch.values, "le", "+Inf", float64(count))
		writeSample(w, h.v.name, "_sum", h.v.labels, ch.values, "", "", sum)
		writeSample(w, h.v.name, "_count", h.v.labels, ch.values, "", "", float64(count))
	}
}

// ExponentialBuckets returns n bounds start, start·factor, start·factor², ….
func ExponentialBuckets(start, factor float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = start
		start *= factor
	}
	return out
}
