package placement

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kiln-project/kiln/server/events"
)

// Board keeps the latest heartbeat of every worker as the policy's view of
// the GPUs. It is safe for concurrent use.
type Board struct {
	mu    sync.Mutex
	stale time.Duration
	last  map[string]seen
}

type seen struct {
	gpu GPU
	at  time.Time
}

// NewBoard returns an empty board that forgets a worker not heard from
// for stale (a few heartbeat intervals).
func NewBoard(stale time.Duration) *Board {
	return &Board{stale: stale, last: map[string]seen{}}
}

// Observe records a heartbeat received at now; a stopped or draining
// worker leaves the board.
func (b *Board) Observe(hb events.Heartbeat, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if hb.Stopped || hb.Draining {
		delete(b.last, hb.Worker)
		return
	}
	g := GPU{Worker: hb.Worker, Models: map[string]Tier{}, Speed: hb.Speed}
	for _, m := range hb.Memory {
		if m.TierName == "host" {
			g.Models[m.Model] = Host
		}
	}
	for _, m := range hb.Models {
		g.Models[m] = Device
	}
	for m, n := range hb.Queued {
		if n > 0 {
			if g.Waiting == nil {
				g.Waiting = map[string]int{}
			}
			g.Waiting[m] = n
			g.Queued += n
		}
	}
	b.last[hb.Worker] = seen{gpu: g, at: now}
}

// GPUs returns the workers heard from within the stale time before now,
// by worker name.
func (b *Board) GPUs(now time.Time) []GPU {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]GPU, 0, len(b.last))
	for id, s := range b.last {
		if now.Sub(s.at) > b.stale {
			delete(b.last, id)
			continue
		}
		out = append(out, s.gpu)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Worker < out[j].Worker })
	return out
}

// Listen feeds the board from the heartbeat subject until the returned
// function is called.
func (b *Board) Listen(nc *nats.Conn) (stop func(), err error) {
	sub, err := nc.Subscribe(events.HeartbeatSubject, func(m *nats.Msg) {
		var hb events.Heartbeat
		if json.Unmarshal(m.Data, &hb) == nil && hb.Worker != "" {
			b.Observe(hb, time.Now())
		}
	})
	if err != nil {
		return nil, fmt.Errorf("placement: subscribe to heartbeats: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}
