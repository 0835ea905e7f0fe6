package memory

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
)

// peakVersion is the peak file's format; other versions are ignored.
const peakVersion = 1

type peakKey struct {
	Model         string
	Images        int
	Width, Height int
}

// peakStore holds measured activation peaks. The Manager's mutex guards
// the map; save takes its snapshot through snap (which locks) and
// serialises file writes with dirty.
type peakStore struct {
	path   string
	device string
	m      map[peakKey]int64
	dirty  chan struct{} // 1-slot semaphore serialising save
	snap   func() []peakEntry
}

type peakEntry struct {
	Model  string `json:"model"`
	Images int    `json:"images"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Bytes  int64  `json:"bytes"`
}

type peakFile struct {
	Version int         `json:"version"`
	Device  string      `json:"device"`
	Peaks   []peakEntry `json:"peaks"`
}

// loadPeaks reads path; a missing, unreadable or foreign file gives an
// empty store (measurements are redone, nothing fails).
func loadPeaks(path, device string) *peakStore {
	s := &peakStore{path: path, device: device, m: map[peakKey]int64{}, dirty: make(chan struct{}, 1)}
	if path == "" {
		return s
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return s
	}
	var f peakFile
	if json.Unmarshal(raw, &f) != nil || f.Version != peakVersion || f.Device != device {
		return s
	}
	for _, e := range f.Peaks {
		if e.Images > 0 && e.Width > 0 && e.Height > 0 && e.Bytes > 0 {
			s.m[peakKey{e.Model, e.Images, e.Width, e.Height}] = e.Bytes
		}
	}
	return s
}

func keyOf(b Batch) peakKey { return peakKey(b) }

func (s *peakStore) get(b Batch) (int64, bool) {
	v, ok := s.m[keyOf(b)]
	return v, ok
}

// put keeps the largest peak seen for b and reports whether it grew.
func (s *peakStore) put(b Batch, v int64) bool {
	k := keyOf(b)
	if v > s.m[k] {
		s.m[k] = v
		return true
	}
	return false
}

// closest returns the measurement of b's model whose pixel count is
// nearest b's (by ratio), preferring larger ones on ties.
func (s *peakStore) closest(b Batch) (Batch, int64, bool) {
	var best Batch
	var bestV int64
	bestD := math.Inf(1)
	for k, v := range s.m {
		if k.Model != b.Model {
			continue
		}
		c := Batch(k)
		d := math.Abs(math.Log(float64(c.pixels()) / float64(b.pixels())))
		if d < bestD || (d == bestD && c.pixels() > best.pixels()) {
			best, bestV, bestD = c, v, d
		}
	}
	return best, bestV, bestV > 0
}

func (s *peakStore) entries() []peakEntry {
	out := make([]peakEntry, 0, len(s.m))
	for k, v := range s.m {
		out = append(out, peakEntry{k.Model, k.Images, k.Width, k.Height, v})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Model != b.Model {
			return a.Model < b.Model
		}
		if a.Images != b.Images {
			return a.Images < b.Images
		}
		if a.Width != b.Width {
			return a.Width < b.Width
		}
		return a.Height < b.Height
	})
	return out
}

// save writes the store atomically (temporary file and rename).
func (s *peakStore) save() error {
	if s.path == "" {
		return nil
	}
	s.dirty <- struct{}{}
	defer func() { <-s.dirty }()
	entries := s.snap()
	raw, err := json.MarshalIndent(peakFile{Version: peakVersion, Device: s.device, Peaks: entries}, "", " ")
	if err != nil {
		return fmt.Errorf("memory: peak file: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		return fmt.Errorf("memory: peak file: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".peaks-*")
	if err != nil {
		return fmt.Errorf("memory: peak file: %w", err)
	}
	_, werr := tmp.Write(raw)
	cerr := tmp.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), s.path)
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("memory: peak file: %w", werr)
	}
	return nil
}
