package sdengine

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
)

// Component kinds, as the memory manager and /v1/models name them.
const (
	KindTextEncoder = "text_encoder"
	KindUNet        = "unet"
	KindVAE         = "vae"
)

// hashFile is the cached content hashes of one model's components.
type hashFile struct {
	// Fingerprint identifies the model files hashed (names, sizes, times).
	Fingerprint string            `json:"fingerprint"`
	Hashes      map[string]string `json:"hashes"`
	// Components are the components as the engine's backend holds them.
	Components []memory.Component `json:"components"`
}

// SetStateDir makes the engine cache component hashes under dir (they
// are computed over every tensor byte once per model version); "" hashes
// at every load.
func (e *Engine) SetStateDir(dir string) { e.stateDir = dir }

// fingerprint lists path's files with sizes and modification times.
func fingerprint(path string) (string, error) {
	h := xxhash.New()
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(path, p)
		fmt.Fprintf(h, "%s\x00%d\x00%d\n", rel, info.Size(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%016x", h.Sum64()), nil
}

// cached reads the hash cache of the model at path: its file, the files'
// fingerprint, and the cached entry when it matches the fingerprint.
func (e *Engine) cached(path string) (file, fp string, hf *hashFile) {
	if e.stateDir == "" || path == "" {
		return "", "", nil
	}
	abs, err := filepath.Abs(path)
	if err == nil {
		fp, err = fingerprint(abs)
	}
	if err != nil {
		return "", "", nil
	}
	file = filepath.Join(e.stateDir, "hashes", fmt.Sprintf("%016x.json", xxhash.Sum64String(abs)))
	var h hashFile
	if raw, err := os.ReadFile(file); err == nil && json.Unmarshal(raw, &h) == nil &&
		h.Fingerprint == fp && h.Hashes[KindTextEncoder] != "" && h.Hashes[KindUNet] != "" && h.Hashes[KindVAE] != "" {
		return file, fp, &h
	}
	return file, fp, nil
}

// KnownComponents returns the components of the model at path from the
// hash cache, without loading it (false when it was never loaded or its
// files changed since): the model cache uses it to count, before a load,
// only what the model does not share with resident ones.
func (e *Engine) KnownComponents(path string) ([]memory.Component, bool) {
	_, _, hf := e.cached(path)
	if hf == nil || len(hf.Components) == 0 {
		return nil, false
	}
	return hf.Components, true
}

// componentHashes returns the content hash of each component (by kind)
// of the checkpoint at path, from the state directory's cache when the
// model's files have not changed.
func (e *Engine) componentHashes(path string, comps []family.Component) (map[string]string, error) {
	cacheFile, fp, hf := e.cached(path)
	if hf != nil {
		return hf.Hashes, nil
	}
	hashes := map[string]string{}
	for _, c := range comps {
		h, err := HashSource(c.Weights)
		if err != nil {
			return nil, fmt.Errorf("%s hash: %w", c.Kind, err)
		}
		hashes[c.Kind] = h
	}
	if cacheFile != "" {
		// A cache that cannot be written costs a rehash next time, nothing more.
		hf := hashFile{Fingerprint: fp, Hashes: hashes, Components: components(comps, hashes, e.be)}
		if raw, err := json.Marshal(hf); err == nil {
			if os.MkdirAll(filepath.Dir(cacheFile), 0o755) == nil {
				_ = writeAtomic(cacheFile, raw)
			}
		}
	}
	return hashes, nil
}

// deviceBytes estimates what src takes on a backend computing in act:
// matrices and filters in the activation dtype, 1-D tensors in float32,
// each rounded up to 256 bytes as the CUDA backend allocates them.
func deviceBytes(src safetensors.Source, act tensor.DType) int64 {
	var n int64
	for _, name := range src.Names() {
		info, ok := src.Info(name)
		if !ok {
			continue
		}
		size := int64(4)
		if len(info.Shape) > 1 {
			size = int64(act.Size())
		}
		el := int64(1)
		for _, d := range info.Shape {
			el *= int64(d)
		}
		n += (el*size + 255) &^ 255
	}
	return n
}

// components describes a checkpoint's parts for the memory manager.
func components(comps []family.Component, hashes map[string]string, be backend.Backend) []memory.Component {
	act := tensor.F32
	if r, ok := be.(interface{ ActivationDType() tensor.DType }); ok {
		act = r.ActivationDType()
	}
	vaeAct := act
	if act == tensor.F16 {
		vaeAct = tensor.BF16 // the pipeline runs the VAE on a bf16 view: same size
	}
	out := make([]memory.Component, len(comps))
	for i, c := range comps {
		a := act
		if c.Codec {
			a = vaeAct
		}
		out[i] = memory.Component{Kind: c.Kind, Hash: hashes[c.Kind], Bytes: deviceBytes(c.Weights, a)}
	}
	return out
}

// encoderHash is the content hash of a checkpoint's text encoders: one
// encoder's own hash, several joined in order.
func encoderHash(comps []family.Component, hashes map[string]string) string {
	var hs []string
	for _, c := range comps {
		if c.TextEncoder {
			hs = append(hs, hashes[c.Kind])
		}
	}
	return strings.Join(hs, "+")
}

// Components lists the model's parts with their content hashes and device
// bytes (estimated from the checkpoint), for the memory manager.
// A sequential model lists only its largest stage's components: the most
// it holds on the device at once.
func (m *Model) Components() []memory.Component {
	if m.Sequential() {
		_, comps := stageBytes(m.comps, m.stages)
		return comps
	}
	return append([]memory.Component(nil), m.comps...)
}

// DeviceBytes implements modelcache.Sizer: the device bytes of the
// model's weights, measured by the backend when it groups weights (shared
// weights included), else estimated; for a sequential model, its largest
// stage's (estimated).
func (m *Model) DeviceBytes() int64 {
	if m.Sequential() {
		n, _ := stageBytes(m.comps, m.stages)
		return n
	}
	if m.group != nil {
		dev, _, host := m.group.Footprint()
		return dev + host
	}
	var n int64
	for _, c := range m.comps {
		n += c.Bytes
	}
	return n
}

// errNoOffload is returned by backends that cannot group weights (CPU):
// the model cache drops such models instead.
var errNoOffload = fmt.Errorf("sdengine: this backend cannot offload weights")

// Offload implements modelcache.Offloader: the weights move to pinned host
// memory.
func (m *Model) Offload() error {
	if m.group == nil {
		return errNoOffload
	}
	return m.group.Offload()
}

// Restore implements modelcache.Restorer: the weights come back to the
// device.
func (m *Model) Restore() error {
	if m.group == nil {
		return nil
	}
	return m.group.Restore()
}

// writeAtomic writes raw to path through a temporary file and a rename.
func writeAtomic(path string, raw []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".hashes-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(raw)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
