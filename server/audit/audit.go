// Package audit records administrative actions (who, what, when, the
// outcome) in a JetStream stream, so that every gateway writes to, and an
// operator reads from, one durable log.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream is the name of the audit stream; Subject prefixes its messages.
const (
	Stream  = "KILN_AUDIT"
	Subject = "kiln.audit"
)

// Entry is one administrative action.
type Entry struct {
	Time time.Time `json:"time"`
	// Actor is who acted ("admin" for the admin key), Remote where from.
	Actor  string `json:"actor"`
	Remote string `json:"remote,omitempty"`
	// Action is the method and route ("POST /v1/admin/tenants"), Target
	// what it acted on (a tenant, key or worker id).
	Action string `json:"action"`
	Target string `json:"target,omitempty"`
	// Status is the HTTP status the action ended with.
	Status int `json:"status"`
	// Details holds the request's settings (never secrets).
	Details any `json:"details,omitempty"`
}

// Log appends to and reads the audit stream.
type Log struct {
	js     jetstream.JetStream
	stream jetstream.Stream
}

// Open creates (or updates) the audit stream, keeping entries for
// retention.
func Open(ctx context.Context, js jetstream.JetStream, retention time.Duration, replicas int) (*Log, error) {
	if replicas <= 0 {
		replicas = 1
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        Stream,
		Description: "kiln audit log of administrative actions",
		Subjects:    []string{Subject + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxAge:      retention,
		MaxMsgSize:  64 << 10,
	})
	if err != nil {
		return nil, fmt.Errorf("audit: stream: %w", err)
	}
	return &Log{js: js, stream: st}, nil
}

// Record appends an entry.
func (l *Log) Record(ctx context.Context, e Entry) error {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("audit: encode: %w", err)
	}
	if _, err := l.js.Publish(ctx, Subject+"."+e.Actor, data); err != nil {
		return fmt.Errorf("audit: record: %w", err)
	}
	return nil
}

// Last returns up to n of the newest entries, oldest first.
func (l *Log) Last(ctx context.Context, n int) ([]Entry, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: info: %w", err)
	}
	var out []Entry
	first, last := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 {
		return out, nil
	}
	start := first
	if last >= uint64(n) && last-uint64(n)+1 > first {
		start = last - uint64(n) + 1
	}
	for seq := start; seq <= last; seq++ {
		m, err := l.stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("audit: read %d: %w", seq, err)
		}
		var e Entry
		if json.Unmarshal(m.Data, &e) == nil {
			out = append(out, e)
		}
	}
	return out, nil
}
