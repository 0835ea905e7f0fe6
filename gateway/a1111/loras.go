package a1111

import (
	"net/http"

	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/server/loralib"
)

// librarian is implemented by backends that know the installed LoRAs and
// embeddings.
type librarian interface {
	Library() *loralib.Library
}

func (h *Handler) library() *loralib.Library {
	if l, ok := h.b.(librarian); ok {
		return l.Library()
	}
	return nil
}

// loras lists the installed LoRAs (<models_dir>/loras) and the caller's
// own uploads; a prompt uses one as <lora:name:weight>.
func (h *Handler) loras(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	out := []LoraItem{}
	if lib := h.library(); lib != nil {
		es, _ := lib.ListFor(p.Tenant, loralib.LoRAs)
		for _, e := range es {
			out = append(out, LoraItem{Name: e.Name, Alias: e.Name, Path: "loras/" + e.Name + ".safetensors",
				Metadata: map[string]any{"sshs_model_hash": e.Hash}})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// embeddings lists the installed embeddings (<models_dir>/embeddings)
// with their vector count and width, read from the file's header.
func (h *Handler) embeddings(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	out := EmbeddingsResponse{Loaded: map[string]EmbeddingItem{}, Skipped: map[string]EmbeddingItem{}}
	if lib := h.library(); lib != nil {
		es, _ := lib.List(loralib.Embeddings)
		for _, e := range es {
			it, ok := embeddingShape(e.Path)
			if !ok {
				out.Skipped[e.Name] = it
				continue
			}
			out.Loaded[e.Name] = it
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// embeddingShape reads the vectors and width of an embedding file's first
// tensor without loading it.
func embeddingShape(path string) (EmbeddingItem, bool) {
	f, err := safetensors.Open(path)
	if err != nil {
		return EmbeddingItem{}, false
	}
	defer f.Close()
	names := f.Names()
	if len(names) == 0 {
		return EmbeddingItem{}, false
	}
	info, _ := f.Info(names[0])
	switch len(info.Shape) {
	case 1:
		return EmbeddingItem{Vectors: 1, Shape: info.Shape[0]}, true
	case 2:
		return EmbeddingItem{Vectors: info.Shape[0], Shape: info.Shape[1]}, true
	}
	return EmbeddingItem{}, false
}
