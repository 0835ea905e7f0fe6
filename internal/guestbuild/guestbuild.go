// Package guestbuild compiles Go Wasm guests for tests: it runs
// `go build` for GOOS=wasip1 GOARCH=wasm -buildmode=c-shared once per
// package and test binary, and skips the test when no Go toolchain is on
// the PATH.
package guestbuild

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Builder caches the guests it builds in a directory.
type Builder struct {
	mu    sync.Mutex
	dir   string
	built map[string][]byte
}

// New returns a builder writing into dir.
func New(dir string) *Builder { return &Builder{dir: dir, built: map[string][]byte{}} }

// Build returns the module built from the package at pkg (a path such as
// "./testdata/hostile" relative to the test's directory, or an import
// path).
func (b *Builder) Build(t testing.TB, pkg string) []byte {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go toolchain not found: cannot build the Wasm guest " + pkg)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if w, ok := b.built[pkg]; ok {
		return w
	}
	out := filepath.Join(b.dir, strings.NewReplacer("/", "_", ".", "_").Replace(pkg)+".wasm")
	cmd := exec.Command(goBin, "build", "-buildmode=c-shared", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatal(errors.New("build " + pkg + ": " + err.Error() + ": " + string(msg)))
	}
	w, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	b.built[pkg] = w
	return w
}
