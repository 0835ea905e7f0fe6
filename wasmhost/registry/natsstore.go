package registry

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// ModulesBucket is the JetStream object store bucket of Wasm modules.
const ModulesBucket = "kiln_wasm_modules"

// ObjectStore is a Store over a JetStream object store bucket, shared by
// every gateway and worker of a deployment.
type ObjectStore struct {
	obs jetstream.ObjectStore
}

// OpenObjectStore creates (or opens) the bucket and returns a Store on it.
// replicas is the bucket's replication factor (≤ 1: one copy).
func OpenObjectStore(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*ObjectStore, error) {
	if replicas < 1 {
		replicas = 1
	}
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      bucket,
		Description: "kiln Wasm policies and nodes: module versions and slot states",
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("registry: object store %s: %w", bucket, err)
	}
	return &ObjectStore{obs: obs}, nil
}

// Put implements Store.
func (s *ObjectStore) Put(ctx context.Context, key string, data []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if _, err := s.obs.PutBytes(ctx, key, data); err != nil {
		return fmt.Errorf("registry: put %s: %w", key, err)
	}
	return nil
}

// Get implements Store.
func (s *ObjectStore) Get(ctx context.Context, key string) ([]byte, error) {
	b, err := s.obs.GetBytes(ctx, key)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("registry: %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("registry: get %s: %w", key, err)
	}
	return b, nil
}

// List implements Store.
func (s *ObjectStore) List(ctx context.Context, prefix string) ([]string, error) {
	infos, err := s.obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("registry: list %s: %w", prefix, err)
	}
	var out []string
	for _, in := range infos {
		if !in.Deleted && strings.HasPrefix(in.Name, prefix) {
			out = append(out, in.Name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Delete implements Store.
func (s *ObjectStore) Delete(ctx context.Context, key string) error {
	err := s.obs.Delete(ctx, key)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("registry: delete %s: %w", key, err)
	}
	return nil
}

// Watch calls changed with the key of every object put or deleted after
// it starts, until ctx ends.
func (s *ObjectStore) Watch(ctx context.Context, changed func(key string)) error {
	w, err := s.obs.Watch(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("registry: watch: %w", err)
	}
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case info, ok := <-w.Updates():
				if !ok {
					return
				}
				if info != nil {
					changed(info.Name)
				}
			}
		}
	}()
	return nil
}
