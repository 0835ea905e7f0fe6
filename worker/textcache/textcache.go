// Package textcache caches text-encoder outputs in a Ristretto cache sized
// in bytes, keyed by (text encoder content hash, prompt, clip skip,
// emphasis), so that a prompt seen before — typically the same negative
// prompt on every request — does not run the text encoder again.
package textcache

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/ristretto/v2"
)

// Key identifies one text-encoder output.
type Key struct {
	// Encoder is the content hash of the text encoder's weights.
	Encoder string
	// Prompt is the text as given (emphasis syntax included).
	Prompt string
	// Prompt2 is the second text encoder's prompt when it differs
	// (conditioning.Options.Text2); "" for none.
	Prompt2  string
	ClipSkip int
	Emphasis bool
	// Adapters identifies the text-encoder LoRAs and embeddings the prompt
	// was encoded with (conditioning.Options.Adapters); "" for none.
	Adapters string
}

// String encodes the key as the cache's byte-string key; its strings are
// length-prefixed, so two different keys never give the same string.
func (k Key) String() string {
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(k.Encoder)))
	b = append(b, k.Encoder...)
	b = binary.AppendUvarint(b, uint64(len(k.Prompt)))
	b = append(b, k.Prompt...)
	b = binary.AppendUvarint(b, uint64(len(k.Prompt2)))
	b = append(b, k.Prompt2...)
	b = binary.AppendVarint(b, int64(k.ClipSkip))
	if k.Emphasis {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(k.Adapters)))
	b = append(b, k.Adapters...)
	return string(b)
}

// Value is a cached encoding: the hidden states (and pooled output, when
// the encoder has one) with their shapes.
type Value struct {
	Hidden      []float32
	HiddenShape []int
	Pooled      []float32
	// Extra carries the encoder's own result type alongside the tensors
	// (not counted in the size beyond the tensors).
	Extra any
}

func (v *Value) bytes() int64 { return int64(4*(len(v.Hidden)+len(v.Pooled))) + 64 }

// Cache is safe for concurrent use. The values it returns are shared: do
// not modify them.
type Cache struct {
	c *ristretto.Cache[string, *Value]
	// flight collapses concurrent computations of one key.
	mu     sync.Mutex
	flight map[string]*call
	// hits counts lookups answered without running the encoder; misses
	// counts encoder runs.
	hits, misses atomic.Uint64
}

type call struct {
	done chan struct{}
	v    *Value
	err  error
}

// New returns a cache holding up to maxBytes of encodings.
func New(maxBytes int64) (*Cache, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("textcache: size must be positive")
	}
	c, err := ristretto.NewCache(&ristretto.Config[string, *Value]{
		NumCounters: max(1000, maxBytes/1024), // ~10× the expected entries
		MaxCost:     maxBytes,
		BufferItems: 64,
	})
	if err != nil {
		return nil, fmt.Errorf("textcache: %w", err)
	}
	return &Cache{c: c, flight: map[string]*call{}}, nil
}

// Get returns the cached encoding of k, or computes it with compute, stores
// it and returns it. Concurrent calls for one key compute it once.
func (c *Cache) Get(k Key, compute func() (*Value, error)) (*Value, error) {
	ks := k.String()
	if v, ok := c.c.Get(ks); ok {
		c.hits.Add(1)
		return v, nil
	}
	c.mu.Lock()
	if v, ok := c.c.Get(ks); ok { // stored while we took the lock
		c.mu.Unlock()
		c.hits.Add(1)
		return v, nil
	}
	if f, ok := c.flight[ks]; ok {
		c.mu.Unlock()
		<-f.done
		if f.err == nil {
			c.hits.Add(1)
		}
		return f.v, f.err
	}
	c.misses.Add(1)
	f := &call{done: make(chan struct{})}
	c.flight[ks] = f
	c.mu.Unlock()

	f.v, f.err = compute()
	if f.err == nil && f.v != nil {
		c.c.Set(ks, f.v, f.v.bytes())
		c.c.Wait() // make the entry visible before the flight ends
	}
	c.mu.Lock()
	delete(c.flight, ks)
	c.mu.Unlock()
	close(f.done)
	return f.v, f.err
}

// Stats returns hits (lookups answered without running the encoder),
// misses (encoder runs) and the hit ratio since start.
func (c *Cache) Stats() (hits, misses uint64, ratio float64) {
	hits, misses = c.hits.Load(), c.misses.Load()
	if hits+misses > 0 {
		ratio = float64(hits) / float64(hits+misses)
	}
	return hits, misses, ratio
}

// Clear drops every entry.
func (c *Cache) Clear() { c.c.Clear() }

// Close stops the cache's goroutines.
func (c *Cache) Close() { c.c.Close() }

// HashFiles returns a content hash (xxHash64 over the bytes of every file
// in order, and their sizes) identifying a text encoder's weights.
func HashFiles(paths ...string) (string, error) {
	h := xxhash.New()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return "", fmt.Errorf("textcache: hash %s: %w", p, err)
		}
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("textcache: hash %s: %w", p, err)
		}
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], uint64(n))
		h.Write(b[:])
	}
	return fmt.Sprintf("xxh64:%016x", h.Sum64()), nil
}

// HashBytes returns a content hash of in-memory weights (the same function
// as HashFiles over one file with these contents).
func HashBytes(data []byte) string {
	h := xxhash.New()
	h.Write(data)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(len(data)))
	h.Write(b[:])
	return fmt.Sprintf("xxh64:%016x", h.Sum64())
}
