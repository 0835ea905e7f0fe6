// Package families lists the model families Kiln serves. Adding a family
// is one line here and one folder under core/model/.
package families

import (
	"fmt"

	"github.com/kiln-project/kiln/core/checkpoint"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/model/sd"
	"github.com/kiln-project/kiln/core/model/sdxl"
)

// All returns the families in the order they are asked to claim a
// checkpoint.
func All() family.Registry {
	return family.Registry{
		sdxl.Family{},
		sd.Family{},
	}
}

// FromCheckpoint wraps a checkpoint built in memory (a synthetic
// random-weight model) in its family, as Open does for files.
func FromCheckpoint(m *checkpoint.Model) (family.Checkpoint, error) {
	switch m.Family {
	case checkpoint.FamilySDXL:
		return sdxl.FromCheckpoint(m)
	case checkpoint.FamilySD, "":
		return sd.FromCheckpoint(m), nil
	}
	return nil, fmt.Errorf("families: no family %q", m.Family)
}
