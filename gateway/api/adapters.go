package api

import (
	"context"

	"github.com/kiln-project/kiln/gateway/live"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/loralib"
)

// adapterBackend is what the client-API adapters (gateway/a1111,
// gateway/comfyui) use of
// the gateway: the native job flow plus the model list, model hashes,
// live job state and GPU readings.
type adapterBackend struct{ *Server }

// Library gives the adapters the installed LoRAs and embeddings.
func (b adapterBackend) Library() *loralib.Library { return b.o.Library }

// Models lists the servable models and the default one.
func (b adapterBackend) Models() ([]catalog.Model, string) {
	b.o.Models.Refresh()
	return b.o.Models.List(), b.o.Models.Default()
}

// ModelHash returns a model's SHA-256 (core/modelhash), "" when unknown.
func (b adapterBackend) ModelHash(ctx context.Context, name string) string {
	m, ok := b.o.Models.Get(name)
	if !ok {
		return ""
	}
	h, err := b.hashes.Full(ctx, m.Path)
	if err != nil {
		return ""
	}
	return h
}

// Live returns what was last heard of a job.
func (b adapterBackend) Live(tenant, job string) (live.State, bool) { return b.live.Get(tenant, job) }

// PutImage stores an image (ComfyUI uploads).
func (b adapterBackend) PutImage(ctx context.Context, tenant, id string, data []byte) error {
	return b.o.Store.PutImage(ctx, tenant, id, data)
}

// Subscribe follows a tenant's job events and previews.
func (b adapterBackend) Subscribe(tenant string, buf int) (<-chan live.Update, func()) {
	return b.live.Subscribe(tenant, buf)
}

// GPUs returns the GPUs the workers report.
func (b adapterBackend) GPUs() []events.GPU { return b.status(context.Background()).GPUs }

// LoadState reads an adapter's persisted state (nil without a store or a
// value).
func (b adapterBackend) LoadState(ctx context.Context, key string) ([]byte, error) {
	if b.o.State == nil {
		return nil, nil
	}
	return b.o.State.Get(ctx, key)
}

// SaveState persists an adapter's state (a no-op without a store).
func (b adapterBackend) SaveState(ctx context.Context, key string, data []byte) error {
	if b.o.State == nil {
		return nil
	}
	return b.o.State.Put(ctx, key, data)
}

// ListState reads the persisted state under a key prefix.
func (b adapterBackend) ListState(ctx context.Context, prefix string) (map[string][]byte, error) {
	if b.o.State == nil {
		return nil, nil
	}
	return b.o.State.List(ctx, prefix)
}

// DeleteState removes persisted state.
func (b adapterBackend) DeleteState(ctx context.Context, key string) error {
	if b.o.State == nil {
		return nil
	}
	return b.o.State.Delete(ctx, key)
}
