package registry

import (
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/kiln-project/kiln/wasmhost"
)

// ringSize is the number of recent durations kept per side for the
// latency percentiles.
const ringSize = 512

type ring struct {
	d    [ringSize]time.Duration
	n    int
	next int
}

func (r *ring) add(d time.Duration) {
	r.d[r.next] = d
	r.next = (r.next + 1) % ringSize
	if r.n < ringSize {
		r.n++
	}
}

// percentiles returns the p50 and p95 in µs.
func (r *ring) percentiles() (p50, p95 float64) {
	if r.n == 0 {
		return 0, 0
	}
	s := append([]time.Duration(nil), r.d[:r.n]...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) float64 { return float64(s[int(q*float64(len(s)-1))].Nanoseconds()) / 1e3 }
	return at(0.5), at(0.95)
}

// Disagreement records one input on which the candidate answered
// differently.
type Disagreement struct {
	At     time.Time       `json:"at"`
	Active json.RawMessage `json:"active"`
	Shadow json.RawMessage `json:"shadow"`
}

// ShadowReport is what GET shows about a shadow candidate.
type ShadowReport struct {
	Candidate Ref       `json:"candidate"`
	Since     time.Time `json:"since,omitzero"`
	// Compared counts the inputs both answered; Agreed and Disagreed split
	// them; Agreement is Agreed/Compared.
	Compared  uint64  `json:"compared"`
	Agreed    uint64  `json:"agreed"`
	Disagreed uint64  `json:"disagreed"`
	Agreement float64 `json:"agreement"`
	// Failed counts candidate calls that did not answer (by result in
	// Failures); Skipped counts inputs not shadowed because too many
	// shadow calls were in flight.
	Failed   uint64            `json:"failed"`
	Failures map[string]uint64 `json:"failures,omitempty"`
	Skipped  uint64            `json:"skipped"`
	// Latencies of the active policy and of the candidate over the last
	// 512 shadowed inputs, in µs.
	ActiveP50US      float64       `json:"active_p50_us"`
	ActiveP95US      float64       `json:"active_p95_us"`
	ShadowP50US      float64       `json:"shadow_p50_us"`
	ShadowP95US      float64       `json:"shadow_p95_us"`
	LastDisagreement *Disagreement `json:"last_disagreement,omitempty"`
}

type shadowStats struct {
	mu        sync.Mutex
	candidate Ref
	since     time.Time
	compared  uint64
	agreed    uint64
	failed    uint64
	skipped   uint64
	failures  map[wasmhost.Result]uint64
	active    ring
	shadow    ring
	last      *Disagreement
}

func newShadowStats(ref Ref, now time.Time) *shadowStats {
	return &shadowStats{candidate: ref, since: now.UTC(), failures: map[wasmhost.Result]uint64{}}
}

func (s *shadowStats) skip() {
	s.mu.Lock()
	s.skipped++
	s.mu.Unlock()
}

func (s *shadowStats) record(activeDur time.Duration, o wasmhost.Outcome, same bool, now time.Time, active, shadow any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active.add(activeDur)
	if !o.OK() {
		s.failed++
		s.failures[o.Result]++
		return
	}
	s.shadow.add(o.Duration)
	s.compared++
	if same {
		s.agreed++
		return
	}
	a, _ := json.Marshal(active)
	b, _ := json.Marshal(shadow)
	s.last = &Disagreement{At: now.UTC(), Active: a, Shadow: b}
}

func (s *shadowStats) report() ShadowReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := ShadowReport{Candidate: s.candidate, Since: s.since, Compared: s.compared, Agreed: s.agreed,
		Disagreed: s.compared - s.agreed, Failed: s.failed, Skipped: s.skipped, LastDisagreement: s.last}
	if s.compared > 0 {
		r.Agreement = float64(s.agreed) / float64(s.compared)
	}
	if len(s.failures) > 0 {
		r.Failures = map[string]uint64{}
		for k, v := range s.failures {
			r.Failures[string(k)] = v
		}
	}
	r.ActiveP50US, r.ActiveP95US = s.active.percentiles()
	r.ShadowP50US, r.ShadowP95US = s.shadow.percentiles()
	return r
}
