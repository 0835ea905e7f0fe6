// Package families lists the model families Kiln serves. Adding a family
// is one line here and one folder under core/model/.
package families

import (
	"fmt"

	"github.com/kiln-project/kiln/core/checkpoint"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/model/qwenimage"
	"github.com/kiln-project/kiln/core/model/sd"
	"github.com/kiln-project/kiln/core/model/sdxl"
)

// All returns the families in the order they are asked to claim a
// checkpoint.
func All() family.Registry {
	return family.Registry{
		sdxl.Family{},
		sd.Family{},
		qwenimage.Family{},
	}
}

// inMemory is implemented by families that can wrap a checkpoint built in
// memory (a synthetic random-weight model) as their Open does for files.
type inMemory interface {
	// Wraps reports whether the family serves m (by its Family field).
	Wraps(m *checkpoint.Model) bool
	// FromModel wraps m; the result owns it.
	FromModel(m *checkpoint.Model) (family.Checkpoint, error)
}

// FromCheckpoint wraps a checkpoint built in memory in the first family
// of All that serves it, as Open does for files.
func FromCheckpoint(m *checkpoint.Model) (family.Checkpoint, error) {
	for _, f := range All() {
		if w, ok := f.(inMemory); ok && w.Wraps(m) {
			return w.FromModel(m)
		}
	}
	return nil, fmt.Errorf("families: no family serves a %q checkpoint", m.Family)
}
