// Package models ships Kiln's built-in model, kiln-shapes: a small text-to-
// image model in the Stable Diffusion architecture, trained by the project
// (tools/train), embedded in the binary so that Kiln makes pictures out of
// the box. It is an ordinary diffusers folder and loads through the same code
// path as any real checkpoint: Extract writes it to disk once and returns the
// folder.
package models

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// BuiltinName is the name under which the built-in model is registered.
const BuiltinName = "kiln-shapes"

//go:embed kiln-shapes
var builtin embed.FS

// fingerprint returns a short content hash of the built-in model's files.
func fingerprint() (string, error) {
	h := sha256.New()
	var names []string
	err := fs.WalkDir(builtin, BuiltinName, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			names = append(names, p)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("models: walk built-in model: %w", err)
	}
	sort.Strings(names)
	for _, n := range names {
		data, err := builtin.ReadFile(n)
		if err != nil {
			return "", fmt.Errorf("models: read %s: %w", n, err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// Extract writes the built-in model under root (once per content version)
// and returns its folder. An existing complete copy is reused.
func Extract(root string) (string, error) {
	fp, err := fingerprint()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, BuiltinName+"-"+fp)
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return dir, nil
	}
	tmp, err := os.MkdirTemp(root, ".extract-*")
	if err != nil {
		if err := os.MkdirAll(root, 0o755); err != nil {
			return "", fmt.Errorf("models: create %s: %w", root, err)
		}
		if tmp, err = os.MkdirTemp(root, ".extract-*"); err != nil {
			return "", fmt.Errorf("models: %w", err)
		}
	}
	defer os.RemoveAll(tmp)
	err = fs.WalkDir(builtin, BuiltinName, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := filepath.FromSlash(p[len(BuiltinName):])
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(tmp, rel), 0o755)
		}
		data, err := builtin.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(tmp, rel), data, 0o644)
	})
	if err != nil {
		return "", fmt.Errorf("models: extract built-in model: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), []byte(fp+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("models: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// another process may have won the race; its copy is as good as ours
		if _, statErr := os.Stat(filepath.Join(dir, ".complete")); statErr == nil {
			return dir, nil
		}
		return "", fmt.Errorf("models: install built-in model: %w", err)
	}
	return dir, nil
}

// DefaultRoot is where Extract puts the built-in model unless told otherwise:
// the user's cache folder, or the temporary folder where there is none.
func DefaultRoot() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "kiln", "models")
	}
	return filepath.Join(os.TempDir(), "kiln-models")
}

// BuiltinPath extracts the built-in model to DefaultRoot and returns its folder.
func BuiltinPath() (string, error) { return Extract(DefaultRoot()) }
