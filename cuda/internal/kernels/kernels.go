// Package kernels embeds Kiln's compiled CUDA kernel image (kernels.fatbin,
// built from the *.cu files here by build.sh, `task cuda:kernels`) together
// with the hash of the sources it was built from.
package kernels

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed kernels.fatbin
var image []byte

//go:embed kernels.sum
var sum string

//go:embed kernels.list
var list string

// Names returns the kernel entry points in the image, sorted.
func Names() []string {
	var out []string
	for _, l := range strings.Split(list, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// Image returns the fat binary (SASS for sm_80/86/89/90 and compute_90 PTX)
// to load with cuModuleLoadData. Callers must not modify it.
func Image() []byte { return image }

// Recorded returns the hashes kernels.sum recorded when the image was built:
// of the sources, of the image, and the nvcc that built it.
func Recorded() (sources, imageHash, nvcc string, err error) {
	sc := bufio.NewScanner(strings.NewReader(sum))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		switch k {
		case "sources":
			sources = v
		case "image":
			imageHash = v
		case "nvcc":
			nvcc = v
		}
	}
	if sources == "" || imageHash == "" {
		return "", "", "", fmt.Errorf("kernels: kernels.sum lacks the sources or image hash")
	}
	return sources, imageHash, nvcc, nil
}

// ImageHash returns the SHA-256 of the embedded image.
func ImageHash() string { return hashOf(image) }

func hashOf(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func recordedField(key string) string {
	for _, l := range strings.Split(sum, "\n") {
		if k, v, ok := strings.Cut(l, " "); ok && k == key {
			return v
		}
	}
	return ""
}

// SourceHash computes the hash that build.sh records, over the *.cu, *.cuh
// and build.sh files of dir: for each in byte order of its name, the name, a
// NUL, the content and a NUL.
func SourceHash(dir string) (string, error) {
	fsys := os.DirFS(dir)
	var names []string
	for _, pat := range []string{"*.cu", "*.cuh", "build.sh"} {
		m, err := fs.Glob(fsys, pat)
		if err != nil {
			return "", err
		}
		names = append(names, m...)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return "", fmt.Errorf("kernels: %w", err)
		}
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write(b)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// CheckFresh verifies that the embedded image is the one recorded and that
// the sources in dir still hash to what the image was built from.
func CheckFresh(dir string) error {
	src, img, _, err := Recorded()
	if err != nil {
		return err
	}
	listHash := recordedField("list")
	if got := hashOf([]byte(list)); listHash != "" && got != listHash {
		return fmt.Errorf("kernels: kernels.list hashes to %s but kernels.sum records %s; run `task cuda:kernels`", got, listHash)
	}
	if got := ImageHash(); got != img {
		return fmt.Errorf("kernels: kernels.fatbin hashes to %s but kernels.sum records %s; run `task cuda:kernels`", got, img)
	}
	cur, err := SourceHash(dir)
	if err != nil {
		return err
	}
	if cur != src {
		return fmt.Errorf("kernels: the kernel sources changed since kernels.fatbin was built (sources %s, image built from %s); run `task cuda:kernels`", cur, src)
	}
	if !bytes.HasPrefix(image, []byte{0x50, 0xed, 0x55, 0xba}) {
		return fmt.Errorf("kernels: kernels.fatbin is not a CUDA fat binary")
	}
	return nil
}
