// Package catalog is the registry of the models a Kiln process can serve:
// those named in the configuration, the built-in model (when registered with
// SetBuiltin) and those found in the models folder (a diffusers folder with
// model_index.json, or a single .safetensors checkpoint, per entry).
package catalog

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/kiln-project/kiln/core/model/qwenimage"
	"github.com/kiln-project/kiln/server/config"
)

// Model is one servable model.
type Model struct {
	Name string `json:"id"`
	Path string `json:"-"`
	// Format is "diffusers", "single-file" or "synthetic" (a random-weight
	// architecture named synthetic:NAME, served only when enabled).
	Format string `json:"format"`
	// Bytes is the size of its weights on disk, the estimate of its
	// resident size.
	Bytes int64 `json:"bytes"`
	// Builtin marks the model embedded in the binary.
	Builtin bool `json:"builtin"`
	// Family is the model family that serves it ("sd", "sdxl"); "" when no
	// family recognises it.
	Family string `json:"family,omitempty"`
	// NativeWidth and NativeHeight are the image size the model was
	// trained at (UNet sample_size × VAEFactor); 0 when unknown.
	NativeWidth  int `json:"native_width,omitempty"`
	NativeHeight int `json:"native_height,omitempty"`
	// VAEFactor is the VAE's downsampling factor (8 for Stable Diffusion);
	// 0 when unknown.
	VAEFactor int `json:"vae_factor,omitempty"`
	// DefaultSteps and DefaultGuidance are the family's recommended steps
	// and guidance scale (0: the profile's); Sampler is the sampler of a
	// family that runs its own loop and takes no other ("": any).
	DefaultSteps    int     `json:"-"`
	DefaultGuidance float64 `json:"-"`
	Sampler         string  `json:"-"`
}

// Registry holds the current model list. It is safe for concurrent use.
type Registry struct {
	explicit map[string]string
	dir      string
	def      string

	// nativeMu guards natives: native sizes of single files, keyed by
	// path, size and modification time (reading them maps the file).
	nativeMu sync.Mutex
	natives  map[string]native

	synthetic bool // accept synthetic:NAME paths

	mu          sync.RWMutex
	builtinName string
	builtinPath string
	models      map[string]Model
	version     uint64
	errs        []string
}

// New returns a registry over the configured models and folder; call
// Refresh to scan.
func New(explicit map[string]string, dir, defaultModel string) *Registry {
	e := map[string]string{}
	for k, v := range explicit {
		e[k] = v
	}
	return &Registry{explicit: e, dir: dir, def: defaultModel, models: map[string]Model{}, natives: map[string]native{}}
}

// SetBuiltin registers the built-in model: the diffusers folder at path
// under name. It is served like a configured model (a configured model of
// the same name wins) and is the default when no default is configured.
// Call Refresh afterwards.
func (r *Registry) SetBuiltin(name, path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.builtinName, r.builtinPath = name, path
}

// AllowSynthetic makes configured paths of the form synthetic:NAME
// (synthetic:sd15, synthetic:sd15@768, synthetic:sd21, synthetic:sdxl,
// synthetic:sdxl-refiner) servable: random-
// weight architectures for benchmarks that need no download. Call it
// before Refresh.
func (r *Registry) AllowSynthetic(on bool) { r.synthetic = on }

// SyntheticPrefix marks a model path naming a random-weight architecture.
const SyntheticPrefix = "synthetic:"

// synthetic describes a synthetic:NAME model: its native side and an
// estimate of its fp16 weights.
func syntheticModel(name, p string) (Model, error) {
	arch, size, _ := strings.Cut(strings.TrimPrefix(p, SyntheticPrefix), "@")
	side, bytes, fam := 512, int64(2<<30), "sd"
	switch arch {
	case "sd15":
	case "sd21":
		side, bytes = 768, int64(5<<29)
	case "sdxl": // UNet 2.57 G + text encoders 0.82 G + VAE 0.08 G parameters, fp16
		side, bytes, fam = 1024, int64(6_950_000_000), "sdxl"
	case "sdxl-refiner": // UNet 2.26 G + text encoder 0.69 G + VAE 0.08 G
		side, bytes, fam = 1024, int64(6_070_000_000), "sdxl"
	case "qwen-image": // the small-width random Qwen-Image of qwenimage.Synthetic (~0.3 M parameters)
		side, bytes, fam = 1328, int64(1<<20), "qwen-image"
	default:
		return Model{}, fmt.Errorf("model %s: unknown synthetic architecture %q (have sd15, sd21, sdxl, sdxl-refiner, qwen-image)", name, arch)
	}
	if size != "" {
		n := 0
		if _, err := fmt.Sscanf(size, "%d", &n); err != nil || n < 64 || n%64 != 0 || fmt.Sprint(n) != size {
			return Model{}, fmt.Errorf("model %s: synthetic size %q must be a multiple of 64", name, size)
		}
		side = n
	}
	m := Model{Name: name, Path: p, Format: "synthetic", Family: fam, Bytes: bytes, NativeWidth: side, NativeHeight: side, VAEFactor: 8}
	if fam == "qwen-image" {
		m.DefaultSteps, m.DefaultGuidance, m.Sampler = qwenimage.DefaultSteps, qwenimage.DefaultCFG, qwenimage.Sampler
	}
	return m, nil
}

// Refresh rescans the configured paths, the built-in model and the models
// folder. Models that cannot be read are left out and reported by
// Problems; the version grows when the set changes.
func (r *Registry) Refresh() {
	found := map[string]Model{}
	var errs []string
	for name, p := range r.explicit {
		m, err := r.inspect(name, p)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		found[name] = m
	}
	r.mu.RLock()
	bname, bpath := r.builtinName, r.builtinPath
	r.mu.RUnlock()
	if _, taken := found[bname]; bname != "" && !taken {
		m, err := r.inspect(bname, bpath)
		if err != nil {
			errs = append(errs, "built-in "+err.Error())
		} else {
			m.Builtin = true
			found[bname] = m
		}
	}
	if r.dir != "" {
		entries, err := os.ReadDir(r.dir)
		if err != nil && !os.IsNotExist(err) {
			errs = append(errs, fmt.Sprintf("models folder %s: %v", r.dir, err))
		}
		for _, e := range entries {
			name := strings.TrimSuffix(e.Name(), ".safetensors")
			if _, taken := found[name]; taken || config.ValidModelName(name) != nil {
				continue
			}
			if !e.IsDir() && !strings.HasSuffix(e.Name(), ".safetensors") {
				continue
			}
			if e.IsDir() && (name == "loras" || name == "embeddings") {
				continue // server/loralib's folders, not models
			}
			m, err := r.inspect(name, filepath.Join(r.dir, e.Name()))
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			found[name] = m
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !sameModels(r.models, found) {
		r.version++
	}
	r.models = found
	r.errs = errs
}

func sameModels(a, b map[string]Model) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// inspect describes the model at p. A native size that cannot be read
// leaves the size unknown (requests then get the profile's); the model
// itself stays listed, and loading it reports what is wrong.
func (r *Registry) inspect(name, p string) (Model, error) {
	if strings.HasPrefix(p, SyntheticPrefix) {
		if !r.synthetic {
			return Model{}, fmt.Errorf("model %s: synthetic models are served only with --synthetic-models", name)
		}
		return syntheticModel(name, p)
	}
	st, err := os.Stat(p)
	if err != nil {
		return Model{}, fmt.Errorf("model %s: %w", name, err)
	}
	if !st.IsDir() {
		if !strings.HasSuffix(p, ".safetensors") {
			return Model{}, fmt.Errorf("model %s: %s is not a .safetensors file", name, p)
		}
		m := Model{Name: name, Path: p, Format: "single-file", Bytes: st.Size()}
		key := fmt.Sprintf("%s\x00%d\x00%d", p, st.Size(), st.ModTime().UnixNano())
		r.nativeMu.Lock()
		n, ok := r.natives[key]
		r.nativeMu.Unlock()
		if !ok {
			n, _ = inspectNative(p) // unknown on error
			r.nativeMu.Lock()
			if len(r.natives) >= 1024 { // files replaced many times over: start afresh
				clear(r.natives)
			}
			r.natives[key] = n
			r.nativeMu.Unlock()
		}
		m.Family, m.NativeWidth, m.NativeHeight, m.VAEFactor = n.family, n.width, n.height, n.factor
		m.DefaultSteps, m.DefaultGuidance, m.Sampler = n.steps, n.guidance, n.sampler
		return m, nil
	}
	if _, err := os.Stat(filepath.Join(p, "model_index.json")); err != nil {
		return Model{}, fmt.Errorf("model %s: %s has no model_index.json (not a diffusers folder)", name, p)
	}
	var total int64
	err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".safetensors") {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	if err != nil {
		return Model{}, fmt.Errorf("model %s: %w", name, err)
	}
	m := Model{Name: name, Path: p, Format: "diffusers", Bytes: total}
	if n, err := inspectNative(p); err == nil {
		m.Family, m.NativeWidth, m.NativeHeight, m.VAEFactor = n.family, n.width, n.height, n.factor
		m.DefaultSteps, m.DefaultGuidance, m.Sampler = n.steps, n.guidance, n.sampler
	}
	return m, nil
}

// List returns the models sorted by name.
func (r *Registry) List() []Model {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Model, 0, len(r.models))
	for _, m := range r.models {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Get returns a model by name.
func (r *Registry) Get(name string) (Model, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, ok := r.models[name]
	return m, ok
}

// Default returns the model used when a request names none: the configured
// default if present, else the built-in model if present, else the first by
// name; "" when there is none.
func (r *Registry) Default() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if _, ok := r.models[r.def]; ok {
		return r.def
	}
	for name, m := range r.models {
		if m.Builtin {
			return name
		}
	}
	best := ""
	for name := range r.models {
		if best == "" || name < best {
			best = name
		}
	}
	return best
}

// Version grows whenever the set of models changes.
func (r *Registry) Version() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.version
}

// Problems lists models that could not be read at the last refresh.
func (r *Registry) Problems() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return append([]string(nil), r.errs...)
}
