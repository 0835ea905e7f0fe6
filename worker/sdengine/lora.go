package sdengine

import (
	"fmt"
	"sync"

	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/server/loralib"
	"github.com/kiln-project/kiln/worker"
)

// maxParsed is how many parsed LoRAs and embeddings a model keeps.
// TODO(lora): move these into the memory manager (core/memory) with their
// own LRU, GPU/host tiers and metrics; today a model keeps the most
// recently used maxParsed, and their device copies live as long as they do.
const maxParsed = 32

// SetLibrary sets where jobs' LoRAs and embeddings are found. Call it
// before Load.
func (e *Engine) SetLibrary(lib *loralib.Library) { e.lib = lib }

// adapters caches one model's parsed LoRAs and embeddings by file hash.
type adapters struct {
	lib   *loralib.Library
	mu    sync.Mutex
	byKey map[string]any // *lora.LoRA or *lora.Embedding
	order []string       // least recently used first
}

func newAdapters(lib *loralib.Library) *adapters {
	return &adapters{lib: lib, byKey: map[string]any{}}
}

// get returns the parsed file for key, parsing it with parse once.
func (a *adapters) get(key string, parse func() (any, error)) (any, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if v, ok := a.byKey[key]; ok {
		a.touch(key)
		return v, nil
	}
	v, err := parse()
	if err != nil {
		return nil, err
	}
	a.byKey[key] = v
	a.order = append(a.order, key)
	if len(a.order) > maxParsed {
		delete(a.byKey, a.order[0])
		a.order = a.order[1:]
	}
	return v, nil
}

func (a *adapters) touch(key string) {
	for i, k := range a.order {
		if k == key {
			a.order = append(append(a.order[:i:i], a.order[i+1:]...), key)
			return
		}
	}
}

// request converts a worker request to the pipeline's, with its LoRAs and
// embeddings loaded and the prompt's LoRA tags removed.
func (m *Model) request(req worker.Request) (pipeline.Request, error) {
	pr := request(req)
	if clean, _, err := lora.ExtractTags(pr.Prompt); err == nil {
		pr.Prompt = clean
	}
	if len(req.LoRAs) == 0 && len(req.Embeddings) == 0 {
		return pr, nil
	}
	a := m.adapters
	if a == nil || a.lib == nil {
		return pr, fmt.Errorf("the job uses LoRAs or embeddings, and this worker has no models folder for them")
	}
	for _, l := range req.LoRAs {
		e, err := a.entry(loralib.LoRAs, l.Name, l.Hash)
		if err != nil {
			return pr, err
		}
		v, err := a.get("lora:"+e.Hash, func() (any, error) {
			var parsed *lora.LoRA
			err := parseFile(e.Path, func(src safetensors.Source) (err error) {
				parsed, err = lora.Parse(src, m.p.LoRAModules())
				return err
			})
			if parsed != nil {
				parsed.Hash = e.Hash
			}
			return parsed, err
		})
		if err != nil {
			return pr, fmt.Errorf("LoRA %s: %w", l.Name, err)
		}
		pr.LoRAs = append(pr.LoRAs, lora.Use{Name: l.Name, LoRA: v.(*lora.LoRA), UNet: float32(l.Weight), Text: float32(l.TextWeight)})
	}
	for _, em := range req.Embeddings {
		e, err := a.entry(loralib.Embeddings, em.Name, em.Hash)
		if err != nil {
			return pr, err
		}
		v, err := a.get("emb:"+e.Hash, func() (any, error) {
			var parsed *lora.Embedding
			err := parseFile(e.Path, func(src safetensors.Source) (err error) {
				parsed, err = lora.ParseEmbedding(src, e.Name, m.p.EmbeddingDims())
				return err
			})
			if parsed != nil {
				parsed.Hash = e.Hash
			}
			return parsed, err
		})
		if err != nil {
			// as AUTOMATIC1111 does, an embedding made for another model
			// (or unreadable) is not applied: its name stays plain text
			continue
		}
		pr.Embeddings = append(pr.Embeddings, v.(*lora.Embedding))
	}
	return pr, nil
}

// entry finds an installed file and checks it is the one the job was
// submitted with.
func (a *adapters) entry(kind, name, hash string) (loralib.Entry, error) {
	e, err := a.lib.Find(kind, name)
	if err != nil {
		return e, err
	}
	if hash != "" && e.Hash != hash {
		return e, fmt.Errorf("%s %s changed since the job was submitted (hash %s, now %s)", kind, name, hash[:min(12, len(hash))], e.ShortHash())
	}
	return e, nil
}

// parseFile opens a safetensors file for parse (which must copy what it
// keeps) and closes it.
func parseFile(path string, parse func(safetensors.Source) error) error {
	if err := lora.CheckFileName(path); err != nil {
		return err
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return parse(f)
}
