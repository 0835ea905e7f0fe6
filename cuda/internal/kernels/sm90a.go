package kernels

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// sm90a holds the optional Hopper image: sm90a/kernels.fatbin (wgmma
// kernels, sm_90a SASS from nvcc ≥ 12, built by sm90a/build.sh), its
// kernels.list and kernels.sum, next to its sources. A tree without the
// built image has no Hopper kernels; everything runs on the portable image.
//
//go:embed sm90a
var sm90a embed.FS

// SM90A returns the Hopper image, or nil where none was built. Callers must
// not modify it.
func SM90A() []byte {
	b, err := sm90a.ReadFile("sm90a/kernels.fatbin")
	if err != nil {
		return nil
	}
	return b
}

// SM90ANames returns the entry points of the Hopper image, sorted (none
// without an image).
func SM90ANames() []string {
	b, err := sm90a.ReadFile("sm90a/kernels.list")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// SM90ASourceHash computes the hash sm90a/build.sh records, over
// dir/common.cuh and dir/sm90a/{*.cu,build.sh}: for each, in that order
// (the sm90a files by name), its name (common.cuh, sm90a/NAME), a NUL, the
// content and a NUL.
func SM90ASourceHash(dir string) (string, error) {
	names, err := fs.Glob(os.DirFS(filepath.Join(dir, "sm90a")), "*.cu")
	if err != nil {
		return "", err
	}
	names = append(names, "build.sh")
	sort.Strings(names)
	paths := []string{"common.cuh"}
	for _, n := range names {
		paths = append(paths, "sm90a/"+n)
	}
	h := sha256.New()
	for _, p := range paths {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			return "", fmt.Errorf("kernels: %w", err)
		}
		h.Write([]byte(p))
		h.Write([]byte{0})
		h.Write(b)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// CheckSM90AFresh verifies, where a Hopper image is committed, that it is
// the one sm90a/kernels.sum records and that the sources in dir (the
// kernels folder) still hash to what it was built from. Without an image
// it checks nothing.
func CheckSM90AFresh(dir string) error {
	img := SM90A()
	if img == nil {
		return nil
	}
	raw, err := sm90a.ReadFile("sm90a/kernels.sum")
	if err != nil {
		return errors.New("kernels: sm90a/kernels.fatbin without kernels.sum; run sm90a/build.sh")
	}
	rec := map[string]string{}
	for _, l := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok {
			rec[k] = v
		}
	}
	if got := hashOf(img); got != rec["image"] {
		return fmt.Errorf("kernels: sm90a/kernels.fatbin hashes to %s but kernels.sum records %s; run sm90a/build.sh", got, rec["image"])
	}
	list, _ := sm90a.ReadFile("sm90a/kernels.list")
	if got := hashOf(list); got != rec["list"] {
		return fmt.Errorf("kernels: sm90a/kernels.list hashes to %s but kernels.sum records %s; run sm90a/build.sh", got, rec["list"])
	}
	cur, err := SM90ASourceHash(dir)
	if err != nil {
		return err
	}
	if cur != rec["sources"] {
		return fmt.Errorf("kernels: the Hopper kernel sources changed since sm90a/kernels.fatbin was built (sources %s, image built from %s); run sm90a/build.sh with nvcc ≥ 12", cur, rec["sources"])
	}
	return nil
}
