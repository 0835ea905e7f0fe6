package family

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kiln-project/kiln/core/safetensors"
)

// Signature is what identifies a checkpoint's family without loading it.
type Signature struct {
	// Path is the checkpoint's path.
	Path string
	// PipelineClass is a diffusers folder's model_index.json _class_name
	// ("" for a single file).
	PipelineClass string
	// Tensors lists a single file's tensor names (nil for a folder).
	Tensors []string
}

// HasPrefix reports whether some tensor of a single file starts with
// prefix.
func (s Signature) HasPrefix(prefix string) bool {
	for _, n := range s.Tensors {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

// ReadSignature reads the signature of the checkpoint at path: the
// pipeline class of a diffusers folder, or the tensor names of a
// safetensors single file (its header only).
func ReadSignature(path string) (Signature, error) {
	sig := Signature{Path: path}
	st, err := os.Stat(path)
	if err != nil {
		return sig, fmt.Errorf("checkpoint: %w", err)
	}
	if st.IsDir() {
		js, err := os.ReadFile(filepath.Join(path, "model_index.json"))
		if err != nil {
			return sig, fmt.Errorf("checkpoint: %s is not a diffusers folder: %w", path, err)
		}
		var index struct {
			Class string `json:"_class_name"`
		}
		if err := json.Unmarshal(js, &index); err != nil || index.Class == "" {
			return sig, fmt.Errorf("checkpoint: %s/model_index.json: missing _class_name", path)
		}
		sig.PipelineClass = index.Class
		return sig, nil
	}
	switch {
	case strings.HasSuffix(path, ".safetensors"):
		f, err := safetensors.Open(path)
		if err != nil {
			return sig, fmt.Errorf("checkpoint: %w", err)
		}
		defer f.Close()
		sig.Tensors = f.Names()
		return sig, nil
	case strings.HasSuffix(path, ".ckpt") || strings.HasSuffix(path, ".pt") || strings.HasSuffix(path, ".pth") || strings.HasSuffix(path, ".bin"):
		return sig, fmt.Errorf("checkpoint: %s is a pickle file; only safetensors weights are loaded (convert it to .safetensors first)", path)
	}
	return sig, fmt.Errorf("checkpoint: %s is neither a diffusers folder nor a .safetensors file", path)
}

// Registry is an ordered list of families; the first that claims a
// checkpoint serves it.
type Registry []Family

// Find returns the family that claims the checkpoint at path.
func (r Registry) Find(path string) (Family, error) {
	sig, err := ReadSignature(path)
	if err != nil {
		return nil, err
	}
	for _, f := range r {
		if f.Claims(sig) {
			return f, nil
		}
	}
	names := make([]string, len(r))
	for i, f := range r {
		names[i] = f.Name()
	}
	if sig.PipelineClass != "" {
		return nil, fmt.Errorf("checkpoint: %s: pipeline %q is not supported (families: %s)", path, sig.PipelineClass, strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("checkpoint: %s: no model family recognises this single file (families: %s)", path, strings.Join(names, ", "))
}

// Open opens the checkpoint at path with the family that claims it.
func (r Registry) Open(path string, opts OpenOptions) (Checkpoint, error) {
	f, err := r.Find(path)
	if err != nil {
		return nil, err
	}
	return f.Open(path, opts)
}

// Inspect returns the defaults of the checkpoint at path, read by the
// family that claims it.
func (r Registry) Inspect(path string) (Defaults, error) {
	f, err := r.Find(path)
	if err != nil {
		return Defaults{}, err
	}
	return f.Inspect(path)
}
