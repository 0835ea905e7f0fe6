// Package adapterstate keeps the client-API adapters' state (AUTOMATIC1111
// options, ComfyUI prompt history) in a JetStream key-value bucket, so that
// it survives a server restart and is shared by every gateway.
package adapterstate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the key-value bucket's name.
const Bucket = "kiln_adapters"

// Store reads and writes adapter state by key (NATS key characters:
// letters, digits, "-", "_", "=", "/" and "." as a separator).
type Store struct{ kv jetstream.KeyValue }

// Open creates (or opens) the bucket; entries older than ttl expire (0:
// never).
func Open(ctx context.Context, js jetstream.JetStream, ttl time.Duration, replicas int) (*Store, error) {
	if replicas <= 0 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "kiln client-API adapter state (A1111 options, ComfyUI history)",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("adapterstate: bucket: %w", err)
	}
	return &Store{kv: kv}, nil
}

// Get returns a key's value, nil when it has none.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("adapterstate: get %s: %w", key, err)
	}
	return e.Value(), nil
}

// Put sets a key's value.
func (s *Store) Put(ctx context.Context, key string, value []byte) error {
	if _, err := s.kv.Put(ctx, key, value); err != nil {
		return fmt.Errorf("adapterstate: put %s: %w", key, err)
	}
	return nil
}

// Delete removes a key (absent keys are not an error).
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.kv.Purge(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("adapterstate: delete %s: %w", key, err)
	}
	return nil
}

// List returns the values of the keys under prefix (prefix ends with ".").
func (s *Store) List(ctx context.Context, prefix string) (map[string][]byte, error) {
	w, err := s.kv.WatchFiltered(ctx, []string{prefix + ">"}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("adapterstate: list %s: %w", prefix, err)
	}
	defer w.Stop()
	out := map[string][]byte{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e := <-w.Updates():
			if e == nil { // the initial values are all delivered
				return out, nil
			}
			if strings.HasPrefix(e.Key(), prefix) {
				out[e.Key()] = e.Value()
			}
		}
	}
}
