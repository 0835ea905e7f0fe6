// Package sequential runs a model whose components do not fit the device
// together (diffusers' model CPU offload; the guides' "sequential model
// manager"): each component's weights form their own weight group, and
// before the text encoders, the denoiser or the latent codec run, the
// components of the other stages go to pinned host memory and those of
// this stage come back. A job then holds one stage's weights on the
// device at a time: text encoders → encode → offload; denoiser for every
// step; codec to decode. Results are those of the model run whole (the
// weights come back bit-exact).
package sequential

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/conditioning"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/lora"
)

// Stage is what a component does in a job.
type Stage int

// Stages in the order a job meets them.
const (
	// Encoder is a text encoder.
	Encoder Stage = iota
	// Denoiser is the UNet or transformer.
	Denoiser
	// Codec is the latent codec (VAE).
	Codec
)

func (s Stage) String() string {
	switch s {
	case Encoder:
		return "text encoder"
	case Denoiser:
		return "denoiser"
	case Codec:
		return "codec"
	}
	return fmt.Sprintf("Stage(%d)", int(s))
}

// StageOf is the stage of a checkpoint component.
func StageOf(c family.Component) Stage {
	switch {
	case c.TextEncoder:
		return Encoder
	case c.Codec:
		return Codec
	}
	return Denoiser
}

// Part is one component's weight group.
type Part struct {
	Kind  string
	Stage Stage
	Group backend.WeightGroup
}

// Stats count what sequential loading did.
type Stats struct {
	// Switches counts stage changes that moved weights.
	Switches int
	// Moving is the time spent offloading and restoring.
	Moving time.Duration
}

// Model is a family.Model whose components take turns on the device
// while sequential loading is on (SetOn); off, all stay resident and it
// only forwards. It is not safe for concurrent use, like the model.
type Model struct {
	family.Model
	parts []Part

	mu    sync.Mutex
	on    bool
	cur   Stage
	valid bool // cur describes the device
	stats Stats
}

var (
	_                      family.Model        = (*Model)(nil)
	_                      family.TiledDecoder = (*Model)(nil)
	_                      lora.Adaptable      = (*Model)(nil)
	_                      backend.WeightGroup = groups{}
	errNoTiling                                = errors.New("sequential: the model has no tiled decoder")
	errPartsWithoutWeights                     = errors.New("sequential: no weight groups")
)

// New wraps m, whose components' weights were uploaded into parts' groups
// (family.PartBuilder with one grouped view per component).
func New(m family.Model, parts []Part) (*Model, error) {
	if len(parts) == 0 {
		return nil, errPartsWithoutWeights
	}
	return &Model{Model: m, parts: parts}, nil
}

// On reports whether sequential loading is on.
func (m *Model) On() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.on
}

// SetOn turns sequential loading on (stages take turns from the next
// call on; nothing moves now) or off (every component comes back to the
// device now).
func (m *Model) SetOn(on bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.on == on {
		return nil
	}
	m.on, m.valid = on, false
	if on {
		return nil
	}
	return m.restoreAll()
}

// restoreAll brings every part back to the device; m.mu is held.
func (m *Model) restoreAll() error {
	for _, p := range m.parts {
		if err := p.Group.Restore(); err != nil {
			return fmt.Errorf("sequential: restoring %s: %w", p.Kind, err)
		}
	}
	return nil
}

// Stats returns what sequential loading did so far.
func (m *Model) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

// use makes stage s's components resident, the others offloaded first
// (so that the device never holds two stages), when sequential loading
// is on.
func (m *Model) use(s Stage) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.on || (m.valid && m.cur == s) {
		return nil
	}
	start := time.Now()
	for _, p := range m.parts {
		if p.Stage != s {
			if err := p.Group.Offload(); err != nil {
				return fmt.Errorf("sequential: offloading %s: %w", p.Kind, err)
			}
		}
	}
	for _, p := range m.parts {
		if p.Stage == s {
			if err := p.Group.Restore(); err != nil {
				return fmt.Errorf("sequential: restoring %s: %w", p.Kind, err)
			}
		}
	}
	m.cur, m.valid = s, true
	m.stats.Switches++
	m.stats.Moving += time.Since(start)
	return nil
}

// Encode implements family.Model with the text encoders on the device.
func (m *Model) Encode(ctx context.Context, text string, opts conditioning.Options) (conditioning.Result, error) {
	if err := m.use(Encoder); err != nil {
		return conditioning.Result{}, err
	}
	return m.Model.Encode(ctx, text, opts)
}

// Denoise implements family.Model with the denoiser on the device.
func (m *Model) Denoise(ctx context.Context, in family.DenoiseInput) ([]float32, error) {
	if err := m.use(Denoiser); err != nil {
		return nil, err
	}
	return m.Model.Denoise(ctx, in)
}

// EncodeImage implements family.Model with the codec on the device.
func (m *Model) EncodeImage(ctx context.Context, pixels []float32, shape [4]int) ([]float32, []float32, [4]int, error) {
	if err := m.use(Codec); err != nil {
		return nil, nil, [4]int{}, err
	}
	return m.Model.EncodeImage(ctx, pixels, shape)
}

// DecodeLatents implements family.Model with the codec on the device.
func (m *Model) DecodeLatents(ctx context.Context, latents []float32, shape [4]int) ([]float32, [4]int, error) {
	if err := m.use(Codec); err != nil {
		return nil, [4]int{}, err
	}
	return m.Model.DecodeLatents(ctx, latents, shape)
}

// DecodeLatentsTiled implements family.TiledDecoder when the model does.
func (m *Model) DecodeLatentsTiled(ctx context.Context, latents []float32, shape [4]int, tile int) ([]float32, [4]int, error) {
	td, ok := m.Model.(family.TiledDecoder)
	if !ok {
		return nil, [4]int{}, errNoTiling
	}
	if err := m.use(Codec); err != nil {
		return nil, [4]int{}, err
	}
	return td.DecodeLatentsTiled(ctx, latents, shape, tile)
}

// LoRATargets implements lora.Adaptable when the model does (nil
// otherwise: no targets).
func (m *Model) LoRATargets() map[string]lora.Target {
	if a, ok := m.Model.(lora.Adaptable); ok {
		return a.LoRATargets()
	}
	return nil
}

// EmbeddingDims implements lora.Adaptable when the model does.
func (m *Model) EmbeddingDims() map[string]int {
	if a, ok := m.Model.(lora.Adaptable); ok {
		return a.EmbeddingDims()
	}
	return nil
}

// Group returns the weight group of all the model's parts, for the model
// cache (offload and restore the whole model; Close releases every part).
func (m *Model) Group() backend.WeightGroup { return groups{m} }

// groups is a Model as one weight group.
type groups struct{ m *Model }

// Footprint implements backend.WeightGroup: the parts' sums.
func (g groups) Footprint() (device, unique, host int64) {
	m := g.m
	for _, p := range m.parts {
		d, u, h := p.Group.Footprint()
		device, unique, host = device+d, unique+u, host+h
	}
	return device, unique, host
}

// PartFootprints returns each part's device, unique and host bytes.
func (m *Model) PartFootprints() map[string][3]int64 {
	out := make(map[string][3]int64, len(m.parts))
	for _, p := range m.parts {
		d, u, h := p.Group.Footprint()
		out[p.Kind] = [3]int64{d, u, h}
	}
	return out
}

// Offload implements backend.WeightGroup: every part goes to host memory.
func (g groups) Offload() error {
	m := g.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.valid = false
	for _, p := range m.parts {
		if err := p.Group.Offload(); err != nil {
			return fmt.Errorf("sequential: offloading %s: %w", p.Kind, err)
		}
	}
	return nil
}

// Restore implements backend.WeightGroup: every part comes back, unless
// sequential loading is on (then each stage comes back when it runs).
func (g groups) Restore() error {
	m := g.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.on {
		return nil
	}
	return m.restoreAll()
}

// Offloaded implements backend.WeightGroup: every part is offloaded.
func (g groups) Offloaded() bool {
	m := g.m
	for _, p := range m.parts {
		if !p.Group.Offloaded() {
			return false
		}
	}
	return true
}

// Close implements backend.WeightGroup: every part is released (the
// model itself is closed by family.Model's Close).
func (g groups) Close() error {
	m := g.m
	var errs []error
	for _, p := range m.parts {
		errs = append(errs, p.Group.Close())
	}
	return errors.Join(errs...)
}
