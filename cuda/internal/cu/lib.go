// Package cu binds the few CUDA driver API functions Kiln needs. The driver
// library (libcuda.so.1) is opened with dlopen at run time through purego, so
// building Kiln needs neither CUDA headers nor a toolkit, and a machine
// without a driver gets a clear error instead of a link failure.
//
// The driver binds a context to the calling OS thread: callers must make all
// calls for one context from one locked OS thread (the cuda package runs one
// such goroutine per device).
package cu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/ebitengine/purego"
)

// ErrUnsupportedPlatform is returned where dlopen-based loading is not available.
var ErrUnsupportedPlatform = errors.New("CUDA is only supported on linux/amd64 and linux/arm64")

// Library is a dynamically opened shared library.
type Library struct {
	Path   string // the path or name it was opened by
	handle uintptr
}

// Symbol returns the address of an exported function or an error naming it.
func (l *Library) Symbol(name string) (uintptr, error) {
	p, err := purego.Dlsym(l.handle, name)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("%s: symbol %s not found", l.Path, name)
	}
	return p, nil
}

// HasSymbol reports whether the library exports name.
func (l *Library) HasSymbol(name string) bool {
	p, err := purego.Dlsym(l.handle, name)
	return err == nil && p != 0
}

// platformOK reports whether this build can dlopen at all.
func platformOK() bool {
	return runtime.GOOS == "linux" && (runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64")
}

// Open dlopens the first of names found in dirs (tried in order, "" meaning
// the system loader's own search path). It returns every failure joined when
// none opens.
func Open(names []string, dirs []string) (*Library, error) {
	if !platformOK() {
		return nil, ErrUnsupportedPlatform
	}
	var errs []string
	for _, name := range names {
		for _, dir := range dirs {
			p := name
			if dir != "" {
				p = filepath.Join(dir, name)
				if _, err := os.Stat(p); err != nil {
					continue
				}
			}
			h, err := purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL)
			if err == nil && h != 0 {
				return &Library{Path: p, handle: h}, nil
			}
			if err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("none of %s found", strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("none of %s could be opened: %s", strings.Join(names, ", "), strings.Join(errs, "; "))
}

// LibraryDirs returns the folders searched for CUDA libraries, in order: the
// system loader's path (""), the colon-separated KILN_CUDA_LIBS, the CUDA
// toolkit's usual folders, WSL's driver folder and the lib folders of the
// NVIDIA Python wheels (nvidia-cublas, nvidia-cudnn) in common environments.
func LibraryDirs() []string {
	dirs := []string{""}
	if env := os.Getenv("KILN_CUDA_LIBS"); env != "" {
		for _, d := range strings.Split(env, ":") {
			if d != "" {
				dirs = append(dirs, d)
			}
		}
	}
	if home := os.Getenv("CUDA_HOME"); home != "" {
		dirs = append(dirs, filepath.Join(home, "lib64"), filepath.Join(home, "lib"))
	}
	dirs = append(dirs,
		"/usr/local/cuda/lib64",
		"/usr/local/cuda/targets/x86_64-linux/lib",
		"/usr/local/cuda/targets/sbsa-linux/lib",
		"/usr/lib/x86_64-linux-gnu",
		"/usr/lib/aarch64-linux-gnu",
		"/usr/lib/wsl/lib",
		"/usr/local/nvidia/lib64",
		"/usr/local/nvidia/lib",
	)
	var roots []string
	if home, err := os.UserHomeDir(); err == nil {
		roots = append(roots, filepath.Join(home, ".local", "lib"))
	}
	if venv := os.Getenv("VIRTUAL_ENV"); venv != "" {
		roots = append(roots, filepath.Join(venv, "lib"))
	}
	if conda := os.Getenv("CONDA_PREFIX"); conda != "" {
		roots = append(roots, filepath.Join(conda, "lib"))
	}
	roots = append(roots, "/usr/local/lib", "/usr/lib", "/opt/conda/lib")
	if m, _ := filepath.Glob("/opt/*/.venv/lib"); len(m) > 0 {
		roots = append(roots, m...)
	}
	for _, r := range roots {
		for _, pkg := range []string{"site-packages", "dist-packages"} {
			m, _ := filepath.Glob(filepath.Join(r, "python3*", pkg, "nvidia", "*", "lib"))
			dirs = append(dirs, m...)
		}
	}
	return dirs
}
