package tenants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ModeKey is the record in the tenants bucket holding the server's auth mode.
const ModeKey = "auth.mode"

// Auth modes. Keyless admits requests without a key as the local tenant;
// it is decided once, at start-up, and never entered again because tenants
// were removed or revoked.
const (
	ModeKeyless = "keyless"
	ModeKeys    = "keys"
)

// Mode is the recorded auth mode of a data directory.
type Mode struct {
	Mode      string    `json:"mode"`
	Reason    string    `json:"reason"`
	DecidedAt time.Time `json:"decided_at"`
}

// Keyless reports whether the mode admits keyless requests.
func (m Mode) Keyless() bool { return m.Mode == ModeKeyless }

// DecodeMode parses a stored mode record; anything unreadable is keyed
// (fail closed).
func DecodeMode(data []byte) Mode {
	var m Mode
	if json.Unmarshal(data, &m) != nil || m.Mode != ModeKeyless {
		return Mode{Mode: ModeKeys, Reason: m.Reason, DecidedAt: m.DecidedAt}
	}
	return m
}

// GetMode returns the recorded mode; ok is false when none is recorded.
func (s *Store) GetMode(ctx context.Context) (m Mode, ok bool, err error) {
	e, err := s.kv.Get(ctx, ModeKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Mode{}, false, nil
	}
	if err != nil {
		return Mode{}, false, fmt.Errorf("tenants: read auth mode: %w", err)
	}
	return DecodeMode(e.Value()), true, nil
}

func (s *Store) putMode(ctx context.Context, mode, reason string) (Mode, error) {
	m := Mode{Mode: mode, Reason: reason, DecidedAt: time.Now().UTC()}
	data, _ := json.Marshal(m)
	if _, err := s.kv.Put(ctx, ModeKey, data); err != nil {
		return Mode{}, fmt.Errorf("tenants: record auth mode: %w", err)
	}
	return m, nil
}

// Requested auth modes at start-up (the serve configuration's auth_mode).
const (
	RequestAuto    = "auto"
	RequestKeyless = ModeKeyless
	RequestKeys    = ModeKeys
)

// DecideMode settles the auth mode at start-up and records it. Keyless is
// chosen only on a loopback listener, and then either because the operator
// asked for it (request "keyless", refused while a live tenant exists) or,
// with request "auto", because no tenant has ever been created in this
// store and no earlier start recorded API keys. Every other case is keys:
// removing or revoking tenants never turns a server back to keyless.
func (s *Store) DecideMode(ctx context.Context, request string, loopback bool) (Mode, error) {
	prev, recorded, err := s.GetMode(ctx)
	if err != nil {
		return Mode{}, err
	}
	list, _, err := s.List(ctx)
	if err != nil {
		return Mode{}, err
	}
	live := 0
	for _, t := range list {
		if !t.Revoked {
			live++
		}
	}
	switch request {
	case RequestKeys:
		return s.putMode(ctx, ModeKeys, "configured (auth_mode: keys)")
	case RequestKeyless:
		if !loopback {
			return Mode{}, errors.New("tenants: auth_mode keyless needs a loopback listener")
		}
		if live > 0 {
			return Mode{}, fmt.Errorf("tenants: auth_mode keyless refused: %d live tenant(s) exist", live)
		}
		return s.putMode(ctx, ModeKeyless, "configured (auth_mode: keyless)")
	case RequestAuto, "":
	default:
		return Mode{}, fmt.Errorf("tenants: unknown auth mode %q (want auto, keyless or keys)", request)
	}
	switch {
	case !loopback:
		return s.putMode(ctx, ModeKeys, "listener is not loopback")
	case len(list) > 0:
		if recorded && !prev.Keyless() {
			return prev, nil
		}
		return s.putMode(ctx, ModeKeys, "tenants have been created")
	case recorded && !prev.Keyless():
		return prev, nil // once keyed, always keyed unless configured otherwise
	case recorded:
		return prev, nil
	}
	return s.putMode(ctx, ModeKeyless, "loopback listener and no tenant ever created")
}

// markKeyed records that API keys are required (a tenant now exists).
func (s *Store) markKeyed(ctx context.Context) error {
	m, ok, err := s.GetMode(ctx)
	if err != nil {
		return err
	}
	if ok && !m.Keyless() {
		return nil
	}
	_, err = s.putMode(ctx, ModeKeys, "tenants have been created")
	return err
}
