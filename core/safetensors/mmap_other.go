//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package safetensors

import (
	"io"
	"os"
)

// mapFile reads the whole file into memory where mmap is not available.
func mapFile(f *os.File, size int64) ([]byte, bool, error) {
	data := make([]byte, size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, false, err
	}
	return data, false, nil
}

// unmapFile is never called for read (unmapped) data.
func unmapFile([]byte) error { return nil }
