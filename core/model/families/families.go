// Package families lists the model families Kiln serves. Adding a family
// is one line here and one folder under core/model/.
package families

import (
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/model/sd"
)

// All returns the families in the order they are asked to claim a
// checkpoint.
func All() family.Registry {
	return family.Registry{
		sd.Family{},
	}
}
