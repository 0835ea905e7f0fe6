package sdengine

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/server/loralib"
	"github.com/kiln-project/kiln/worker"
)

// Limits of one model's cache of parsed LoRAs and embeddings.
// TODO(lora): move these into the memory manager (core/memory) with their
// own GPU/host tiers; today a model keeps the most recently used files
// within these limits, and their device copies live as long as they do.
const (
	maxParsed      = 64
	maxParsedBytes = 1 << 30
)

// SetLibrary sets where jobs' LoRAs and embeddings are found. Call it
// before Load.
func (e *Engine) SetLibrary(lib *loralib.Library) { e.lib = lib }

// recordLayout keeps the LoRA layout of a loaded model, for LoRAModules.
func (e *Engine) recordLayout(model string, mods lora.Modules) {
	if mods == nil {
		return
	}
	e.layoutMu.Lock()
	defer e.layoutMu.Unlock()
	if e.layouts == nil {
		e.layouts = map[string]lora.Modules{}
	}
	e.layouts[model] = mods
}

// LoRAModules returns the adaptable layers of model, to check uploaded
// LoRA files against (lora.Parse); false until the engine has loaded that
// model once (a layout does not change when its weights are unloaded).
func (e *Engine) LoRAModules(model string) (lora.Modules, bool) {
	e.layoutMu.Lock()
	defer e.layoutMu.Unlock()
	m, ok := e.layouts[model]
	return m, ok
}

// LoRAStats are the engine's LoRA/embedding cache counters, over all its
// models.
type LoRAStats struct {
	Hits, Misses, Evictions uint64
	Entries, Bytes          int64
}

// loraStats is shared by an engine's models.
type loraStats struct {
	hits, misses, evictions atomic.Uint64
	entries, bytes          atomic.Int64
}

// LoRAStats returns the engine's LoRA cache counters.
func (e *Engine) LoRAStats() LoRAStats {
	s := e.stats()
	return LoRAStats{Hits: s.hits.Load(), Misses: s.misses.Load(), Evictions: s.evictions.Load(),
		Entries: s.entries.Load(), Bytes: s.bytes.Load()}
}

func (e *Engine) stats() *loraStats {
	e.loraOnce.Do(func() { e.lora = &loraStats{} })
	return e.lora
}

// adapters caches one model's parsed LoRAs and embeddings by file hash,
// least recently used first out.
type adapters struct {
	lib   *loralib.Library
	stats *loraStats
	mu    sync.Mutex
	byKey map[string]parsed
	order []string // least recently used first
	bytes int64
}

type parsed struct {
	v     any // *lora.LoRA or *lora.Embedding
	bytes int64
}

func newAdapters(lib *loralib.Library, stats *loraStats) *adapters {
	return &adapters{lib: lib, stats: stats, byKey: map[string]parsed{}}
}

// get returns the parsed file for key, parsing it with parse once.
func (a *adapters) get(key string, parse func() (any, error)) (any, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.byKey[key]; ok {
		a.stats.hits.Add(1)
		a.touch(key)
		return p.v, nil
	}
	a.stats.misses.Add(1)
	v, err := parse()
	if err != nil {
		return nil, err
	}
	p := parsed{v: v, bytes: sizeOf(v)}
	a.byKey[key] = p
	a.order = append(a.order, key)
	a.bytes += p.bytes
	a.stats.entries.Add(1)
	a.stats.bytes.Add(p.bytes)
	for len(a.order) > 1 && (len(a.order) > maxParsed || a.bytes > maxParsedBytes) {
		a.drop(a.order[0])
		a.stats.evictions.Add(1)
	}
	return v, nil
}

// drop removes key from the cache.
func (a *adapters) drop(key string) {
	p := a.byKey[key]
	delete(a.byKey, key)
	for i, k := range a.order {
		if k == key {
			a.order = append(a.order[:i:i], a.order[i+1:]...)
			break
		}
	}
	a.bytes -= p.bytes
	a.stats.entries.Add(-1)
	a.stats.bytes.Add(-p.bytes)
}

// close empties the cache (the model closes).
func (a *adapters) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(a.order) > 0 {
		a.drop(a.order[0])
	}
}

func (a *adapters) touch(key string) {
	for i, k := range a.order {
		if k == key {
			a.order = append(append(a.order[:i:i], a.order[i+1:]...), key)
			return
		}
	}
}

// sizeOf is the host bytes of a parsed file's values.
func sizeOf(v any) int64 {
	var n int
	switch x := v.(type) {
	case *lora.LoRA:
		for _, fs := range x.Factors {
			for _, f := range fs {
				n += len(f.Down) + len(f.Up) + len(f.Magnitude)
			}
		}
	case *lora.Embedding:
		for _, vs := range x.Vectors {
			n += len(vs)
		}
	}
	return 4 * int64(n)
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
		e, err := a.entry(l.Tenant, loralib.LoRAs, l.Name, l.Hash)
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
		e, err := a.entry("", loralib.Embeddings, em.Name, em.Hash)
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

// entry finds an installed file (or tenant's upload) and checks it is the one the job was
// submitted with.
func (a *adapters) entry(tenant, kind, name, hash string) (loralib.Entry, error) {
	e, err := a.lib.FindFor(tenant, kind, name)
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
