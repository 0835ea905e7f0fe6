package catalog

import (
	"github.com/kiln-project/kiln/core/model/families"
)

// native is the image size a model was trained at and its VAE factor.
type native struct {
	width, height, factor int
}

// inspectNative asks the model's family for its native size (a diffusers
// folder's configs, or a single file's inferred ones).
func inspectNative(path string) (native, error) {
	d, err := families.All().Inspect(path)
	if err != nil {
		return native{}, err
	}
	return native{width: d.Width, height: d.Height, factor: d.Factor}, nil
}
