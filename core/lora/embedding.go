package lora

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kiln-project/kiln/core/safetensors"
)

// Embedding is a textual-inversion embedding: N token vectors per text
// encoder, triggered by Name appearing in a prompt.
type Embedding struct {
	Name string
	// Hash is the file's content hash when the caller set it.
	Hash string
	N    int
	// Vectors holds, per namespace (TextEncoder, TextEncoder2), N rows of
	// the encoder's hidden size.
	Vectors map[string][]float32
}

// ParseEmbedding reads a textual-inversion embedding from src: AUTOMATIC1111
// files ("emb_params", or "string_to_param.*"), SDXL pairs ("clip_l",
// "clip_g"), or a diffusers file with one tensor named after its token.
// dims gives the hidden size of each of the model's text encoders; a
// vector width that fits none of them is refused naming the key.
func ParseEmbedding(src safetensors.Source, name string, dims map[string]int) (*Embedding, error) {
	names := src.Names()
	if len(names) == 0 {
		return nil, fmt.Errorf("embedding %s: the file holds no tensors", name)
	}
	e := &Embedding{Name: name, Vectors: map[string][]float32{}}
	add := func(key, ns string) error {
		v, shape, err := safetensors.Float32(src, key)
		if err != nil {
			return fmt.Errorf("embedding %s: %w", name, err)
		}
		d, ok := dims[ns]
		if !ok {
			return fmt.Errorf("embedding %s: key %q is for a text encoder this model does not have", name, key)
		}
		n := 0
		switch {
		case len(shape) == 1 && shape[0] == d:
			n = 1
		case len(shape) == 2 && shape[1] == d && shape[0] > 0:
			n = shape[0]
		default:
			return fmt.Errorf("embedding %s: key %q has shape %v; this model's text encoder needs (vectors, %d)", name, key, shape, d)
		}
		if e.N != 0 && n != e.N {
			return fmt.Errorf("embedding %s: key %q has %d vectors, another key has %d", name, key, n, e.N)
		}
		e.N = n
		e.Vectors[ns] = slices.Clone(v)
		return nil
	}
	var err error
	switch {
	case has(names, "clip_l") || has(names, "clip_g"):
		for _, k := range names {
			switch k {
			case "clip_l", "clip_g":
				ns := map[string]string{"clip_l": TextEncoder, "clip_g": TextEncoder2}[k]
				if _, ok := dims[ns]; !ok && len(dims) > 0 {
					continue // a refiner has only the second encoder
				}
				err = add(k, ns)
			default:
				err = fmt.Errorf("embedding %s: key %q is not part of an SDXL embedding (clip_l, clip_g)", name, k)
			}
			if err != nil {
				return nil, err
			}
		}
		for ns := range dims {
			if e.Vectors[ns] == nil {
				return nil, fmt.Errorf("embedding %s: the file has no vectors for the model's %s", name, nsLabel(ns))
			}
		}
		return e, nil
	case len(names) == 1:
		// emb_params, string_to_param.*, or a diffusers token key
		err = add(names[0], TextEncoder)
	default:
		return nil, fmt.Errorf("embedding %s: %d tensors (%s, …) match no known layout (emb_params, string_to_param, clip_l/clip_g)", name, len(names), names[0])
	}
	if err != nil {
		return nil, err
	}
	if len(dims) > 1 {
		return nil, fmt.Errorf("embedding %s: a single-encoder embedding does not fit a model with two text encoders (want clip_l and clip_g)", name)
	}
	return e, nil
}

// Key identifies the embedding for cache keys: name and content hash.
func (e *Embedding) Key() string { return e.Name + "@" + e.Hash }

func has(names []string, n string) bool { return slices.Contains(names, n) }

// pickleExts are PyTorch pickle formats, which can run code when loaded.
var pickleExts = []string{".pt", ".pth", ".ckpt", ".bin", ".pkl"}

// CheckFileName refuses files that are not safetensors: pickled .pt or
// .ckpt files are never unpickled (loading one can run arbitrary code).
func CheckFileName(path string) error {
	ext := strings.ToLower(filepath.Ext(path))
	if slices.Contains(pickleExts, ext) {
		return fmt.Errorf("%s: %s files are Python pickles, which Kiln never loads (they can run code); convert it to .safetensors", filepath.Base(path), ext)
	}
	if ext != ".safetensors" {
		return fmt.Errorf("%s: want a .safetensors file", filepath.Base(path))
	}
	return nil
}
