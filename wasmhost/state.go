package wasmhost

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
)

// instanceState is what the host functions know about the instance that
// calls them: its deterministic random stream and virtual monotonic clock.
// An instance is used by one goroutine at a time, so no lock is needed.
type instanceState struct {
	rng  uint64 // splitmix64 state
	mono uint64 // virtual monotonic clock, ns
}

// rngSeed seeds every instance's random stream: a fresh instance always
// sees the same bytes, so a module's answers depend only on its inputs.
const rngSeed = 0x6b696c6e5f776173 // "kiln_was"

func newInstanceState() *instanceState { return &instanceState{rng: rngSeed} }

func (s *instanceState) next() uint64 {
	s.rng += 0x9e3779b97f4a7c15
	z := s.rng
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// tick advances the virtual monotonic clock by one microsecond per read,
// so that time moves for the guest's runtime without depending on the
// host's real clock.
func (s *instanceState) tick() uint64 {
	s.mono += 1000
	return s.mono
}

// maxCapture bounds the guest output kept per call for error messages.
const maxCapture = 4 << 10

// callState is carried in the context of one call into an instance.
type callState struct {
	inst   *instanceState
	module *Module
	wallNS int64  // the virtual wall clock at the start of the call: the input's "now"
	mono0  uint64 // the virtual monotonic clock at the start of the call

	mu      sync.Mutex // guards the buffers (host functions run on the call's goroutine; the lock is for safety)
	capture []byte     // the guest's stdout/stderr, for error messages
	pending [3][]byte  // partial lines of stdout (1) and stderr (2)
}

// output takes bytes the guest wrote to fd (1 or 2): it keeps them for
// error messages and logs every complete line (stderr as warnings).
func (c *callState) output(fd int, b []byte) {
	c.captureOutput(b)
	c.mu.Lock()
	var lines []string
	p := append(c.pending[fd], b...)
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 && len(p) < maxLogLine {
			break
		}
		if i < 0 {
			i = maxLogLine
		}
		lines = append(lines, string(p[:i]))
		if i < len(p) && p[i] == '\n' {
			i++
		}
		p = p[i:]
	}
	c.pending[fd] = append(c.pending[fd][:0], p...)
	c.mu.Unlock()
	for _, l := range lines {
		c.logLine(fd, l)
	}
}

// flush logs the partial lines left at the end of a call.
func (c *callState) flush() {
	for fd := 1; fd <= 2; fd++ {
		c.mu.Lock()
		l := string(c.pending[fd])
		c.pending[fd] = nil
		c.mu.Unlock()
		c.logLine(fd, l)
	}
}

func (c *callState) logLine(fd int, l string) {
	if len(l) == 0 || c.module == nil {
		return
	}
	level := int(slog.LevelInfo)
	if fd == 2 {
		level = int(slog.LevelWarn)
	}
	c.module.guestLog(level, l)
}

func (c *callState) captureOutput(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := maxCapture - len(c.capture); room > 0 {
		if len(b) > room {
			b = b[:room]
		}
		c.capture = append(c.capture, b...)
	}
}

func (c *callState) captured() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.capture)
}

type callStateKey struct{}

func withCallState(ctx context.Context, st *callState) context.Context {
	return context.WithValue(ctx, callStateKey{}, st)
}

func callStateFrom(ctx context.Context) *callState {
	st, _ := ctx.Value(callStateKey{}).(*callState)
	return st
}
