// Package modelhash computes the short model hash AUTOMATIC1111 records as
// "Model hash": the first 10 hex digits of the SHA-256 of the checkpoint
// file. A diffusers folder has no single file, so its hash is the SHA-256
// over its .safetensors files in sorted order, each preceded by its path
// relative to the folder and a NUL byte. Results are cached by path, size
// and modification time.
package modelhash

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// ShortLen is the length of a short hash in hex digits.
const ShortLen = 10

// Cache remembers computed hashes. The zero value is ready; it is safe for
// concurrent use.
type Cache struct {
	mu sync.Mutex
	m  map[string]string
}

// Short returns the short hash of a single-file checkpoint or a diffusers
// folder.
func (c *Cache) Short(ctx context.Context, path string) (string, error) {
	full, err := c.Full(ctx, path)
	if err != nil {
		return "", err
	}
	return full[:ShortLen], nil
}

// Full returns the whole SHA-256 in hex (see the package comment).
func (c *Cache) Full(ctx context.Context, path string) (string, error) {
	files, key, err := inventory(path)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	if h, ok := c.m[key]; ok {
		c.mu.Unlock()
		return h, nil
	}
	c.mu.Unlock()
	h := sha256.New()
	for _, f := range files {
		if f.rel != "" {
			io.WriteString(h, f.rel)
			h.Write([]byte{0})
		}
		if err := hashFile(ctx, h, f.path); err != nil {
			return "", err
		}
	}
	sum := hex.EncodeToString(h.Sum(nil))
	c.mu.Lock()
	if c.m == nil || len(c.m) > 1024 {
		c.m = map[string]string{}
	}
	c.m[key] = sum
	c.mu.Unlock()
	return sum, nil
}

type file struct{ path, rel string }

// inventory lists the files a hash covers and a key that changes when any
// of them changes.
func inventory(path string) ([]file, string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, "", fmt.Errorf("modelhash: %w", err)
	}
	var sb strings.Builder
	if !st.IsDir() {
		fmt.Fprintf(&sb, "%s\x00%d\x00%d", path, st.Size(), st.ModTime().UnixNano())
		return []file{{path: path}}, sb.String(), nil
	}
	var files []file
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".safetensors") {
			return nil
		}
		rel, err := filepath.Rel(path, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files = append(files, file{path: p, rel: filepath.ToSlash(rel)})
		fmt.Fprintf(&sb, "%s\x00%d\x00%d\x00", p, info.Size(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("modelhash: %w", err)
	}
	if len(files) == 0 {
		return nil, "", fmt.Errorf("modelhash: %s holds no .safetensors files", path)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })
	return files, sb.String(), nil
}

func hashFile(ctx context.Context, h hash.Hash, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("modelhash: %w", err)
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("modelhash: read %s: %w", path, err)
		}
	}
}
