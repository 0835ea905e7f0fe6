package wasmhost

import (
	"log/slog"
	"sync"
	"time"
)

// limiter is a token bucket.
type limiter struct {
	mu     sync.Mutex
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

func (l *limiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		l.tokens += now.Sub(l.last).Seconds() * l.rate
		if l.tokens > l.burst {
			l.tokens = l.burst
		}
	}
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

func slogLevel(level int) slog.Level {
	switch {
	case level >= int(slog.LevelError):
		return slog.LevelError
	case level >= int(slog.LevelWarn):
		return slog.LevelWarn
	case level >= int(slog.LevelInfo):
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}

// health tracks consecutive failures and the disable backoff.
type health struct {
	mu            sync.Mutex
	fails         int
	backoff       time.Duration
	disabledUntil time.Time
	probation     bool // re-enabled after a backoff: the next failure disables again
	disables      int
}

// allow reports whether the module may be called now.
func (h *health) allow(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !now.Before(h.disabledUntil)
}

func (h *health) success() {
	h.mu.Lock()
	h.fails, h.backoff, h.probation = 0, 0, false
	h.mu.Unlock()
}

// failure records a failure and reports whether it disabled the module.
func (h *health) failure(now time.Time, threshold int, base, max time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fails++
	if h.fails < threshold && !h.probation {
		return false
	}
	if h.backoff == 0 {
		h.backoff = base
	} else {
		h.backoff *= 2
		if h.backoff > max {
			h.backoff = max
		}
	}
	h.disabledUntil = now.Add(h.backoff)
	h.fails = 0
	h.probation = true
	h.disables++
	return true
}

// Health is a snapshot of a module's failure state.
type Health struct {
	Disabled      bool      `json:"disabled"`
	DisabledUntil time.Time `json:"disabled_until,omitzero"`
	Backoff       string    `json:"backoff,omitempty"`
	Failures      int       `json:"consecutive_failures"`
	Disables      int       `json:"disables"`
}

// Health returns the module's failure state.
func (m *Module) Health() Health {
	now := m.host.cfg.Now()
	h := &m.health
	h.mu.Lock()
	defer h.mu.Unlock()
	out := Health{Disabled: now.Before(h.disabledUntil), Failures: h.fails, Disables: h.disables}
	if out.Disabled {
		out.DisabledUntil = h.disabledUntil
		out.Backoff = h.backoff.String()
	}
	return out
}
