package catalog

import (
	"github.com/kiln-project/kiln/core/model/families"
)

// native is the family of a model, the image size it was trained at and
// its VAE factor.
type native struct {
	family                string
	width, height, factor int
	steps                 int
	guidance              float64
	sampler               string
}

// inspectNative asks the model's family for its native size (a diffusers
// folder's configs, or a single file's inferred ones).
func inspectNative(path string) (native, error) {
	f, err := families.All().Find(path)
	if err != nil {
		return native{}, err
	}
	d, err := f.Inspect(path)
	if err != nil {
		return native{}, err
	}
	return native{family: f.Name(), width: d.Width, height: d.Height, factor: d.Factor, steps: d.Steps, guidance: d.GuidanceScale,
		sampler: d.Sampler}, nil
}
