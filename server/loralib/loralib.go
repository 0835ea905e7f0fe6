// Package loralib is the installed LoRAs and textual-inversion embeddings:
// the .safetensors files under <models_dir>/loras and
// <models_dir>/embeddings (a file added while the server runs is seen at
// the next lookup), named by their file name without the extension, with
// AUTOMATIC1111's content hash (SHA-256 of the tensor data after the
// header, of which "Lora hashes" shows the first 12 digits).
package loralib

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kiln-project/kiln/core/lora"
)

// Kinds of entries, also the folder names under the models folder.
const (
	LoRAs      = "loras"
	Embeddings = "embeddings"
)

// Entry is one installed file.
type Entry struct {
	Name string `json:"name"`
	// Hash is A1111's hash (hex SHA-256 of the data after the header).
	Hash string `json:"hash"`
	Size int64  `json:"size"`
	// Tenant is set on a tenant's own upload (PUT /v1/loras/{name}),
	// which only that tenant sees.
	Tenant bool      `json:"tenant,omitempty"`
	Path   string    `json:"-"`
	Mod    time.Time `json:"-"`
}

// ShortHash is the first 12 digits of Hash, as A1111 prints it.
func (e Entry) ShortHash() string { return e.Hash[:min(12, len(e.Hash))] }

// Library finds entries under a models folder. It is safe for concurrent
// use.
type Library struct {
	dir    string
	mu     sync.Mutex
	hashes map[string]hashed // by path
}

type hashed struct {
	size int64
	mod  time.Time
	hash string
}

// New returns the library of modelsDir ("" for none: every list is empty).
func New(modelsDir string) *Library {
	return &Library{dir: modelsDir, hashes: map[string]hashed{}}
}

// List returns the kind's entries sorted by name. Files that cannot be
// read or hashed are left out.
func (l *Library) List(kind string) ([]Entry, error) {
	if kind != LoRAs && kind != Embeddings {
		return nil, fmt.Errorf("loralib: unknown kind %q", kind)
	}
	if l.dir == "" {
		return nil, nil
	}
	dir := filepath.Join(l.dir, kind)
	des, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loralib: %w", err)
	}
	var out []Entry
	for _, de := range des {
		name, ok := strings.CutSuffix(de.Name(), ".safetensors")
		if !ok || de.IsDir() || name == "" {
			continue
		}
		e, err := l.entry(filepath.Join(dir, de.Name()), name)
		if err != nil {
			continue
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Find returns the kind's entry called name. An unknown name is an
// *UnknownError listing close matches; a pickle of that name is refused
// with a message saying to convert it.
func (l *Library) Find(kind, name string) (Entry, error) {
	all, err := l.List(kind)
	if err != nil {
		return Entry{}, err
	}
	for _, e := range all {
		if e.Name == name {
			return e, nil
		}
	}
	for _, ext := range []string{".pt", ".ckpt", ".pth", ".bin"} {
		p := filepath.Join(l.dir, kind, name+ext)
		if _, err := os.Stat(p); err == nil && l.dir != "" {
			return Entry{}, lora.CheckFileName(p)
		}
	}
	names := make([]string, len(all))
	for i, e := range all {
		names[i] = e.Name
	}
	return Entry{}, &UnknownError{Kind: kind, Name: name, Close: Close(name, names, 5)}
}

// UnknownError is a name that is not installed.
type UnknownError struct {
	Kind, Name string
	Close      []string
}

func (e *UnknownError) Error() string {
	what := "LoRA"
	if e.Kind == Embeddings {
		what = "embedding"
	}
	if len(e.Close) == 0 {
		return fmt.Sprintf("unknown %s %q", what, e.Name)
	}
	return fmt.Sprintf("unknown %s %q; close matches: %s", what, e.Name, strings.Join(e.Close, ", "))
}

// entry stats and hashes a file, reusing the hash while size and
// modification time are unchanged.
func (l *Library) entry(path, name string) (Entry, error) {
	st, err := os.Stat(path)
	if err != nil {
		return Entry{}, err
	}
	l.mu.Lock()
	h, ok := l.hashes[path]
	l.mu.Unlock()
	if !ok || h.size != st.Size() || !h.mod.Equal(st.ModTime()) {
		sum, err := Hash(path)
		if err != nil {
			return Entry{}, err
		}
		h = hashed{size: st.Size(), mod: st.ModTime(), hash: sum}
		l.mu.Lock()
		l.hashes[path] = h
		l.mu.Unlock()
	}
	return Entry{Name: name, Hash: h.hash, Size: st.Size(), Path: path, Mod: st.ModTime()}, nil
}

// Hash is A1111's (sd-scripts' "addnet") hash of a safetensors file: the
// hex SHA-256 of everything after the 8-byte length and the JSON header.
func Hash(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var n [8]byte
	if _, err := io.ReadFull(f, n[:]); err != nil {
		return "", fmt.Errorf("loralib: %s: %w", path, err)
	}
	hl := binary.LittleEndian.Uint64(n[:])
	if _, err := f.Seek(int64(hl)+8, io.SeekStart); err != nil || hl > 100<<20 {
		return "", fmt.Errorf("loralib: %s: bad safetensors header length %d", path, hl)
	}
	s := sha256.New()
	if _, err := io.Copy(s, f); err != nil {
		return "", fmt.Errorf("loralib: %s: %w", path, err)
	}
	return hex.EncodeToString(s.Sum(nil)), nil
}

// Close returns up to k of names closest to name (edit distance on lower
// case, substring matches first), closest first.
func Close(name string, names []string, k int) []string {
	type cand struct {
		n string
		d int
	}
	q := strings.ToLower(name)
	var cs []cand
	for _, n := range names {
		l := strings.ToLower(n)
		d := distance(q, l)
		if strings.Contains(l, q) || strings.Contains(q, l) {
			d = 0
		}
		if d <= max(2, len(q)/3) {
			cs = append(cs, cand{n, d})
		}
	}
	slices.SortStableFunc(cs, func(a, b cand) int { return a.d - b.d })
	var out []string
	for i := 0; i < len(cs) && i < k; i++ {
		out = append(out, cs[i].n)
	}
	return out
}

// distance is the Levenshtein distance of a and b (bytes).
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
