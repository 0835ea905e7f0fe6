package sdengine

import (
	"fmt"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/worker/textcache"
)

// NewOnBackend returns an engine that loads models onto be, a backend the
// caller opened for device (for example "cuda:0", as the server's device
// selection names it) and keeps owning: closing the device is the
// caller's job, after the engine's models are closed. text may be nil.
func NewOnBackend(device string, be backend.Backend, text *textcache.Cache) (*Engine, error) {
	if be == nil {
		return nil, fmt.Errorf("sdengine: device %s has no backend", device)
	}
	return &Engine{device: device, be: be, text: text}, nil
}
