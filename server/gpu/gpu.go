// Package gpu reads NVIDIA GPU metrics (memory, utilisation, temperature,
// power) through NVML, loaded at run time. Where the NVML library is
// absent, or the binary was built without cgo, there are simply no GPUs to
// report: that is not an error.
package gpu

import (
	"sync"

	"github.com/kiln-project/kiln/server/events"
)

// Monitor reads GPU metrics. The zero value is unusable; use Open.
type Monitor struct {
	mu      sync.Mutex
	backend reader
}

// reader is implemented by the NVML reader (cgo builds) and by none.
type reader interface {
	read() []events.GPU
	close()
}

// Open starts NVML if it can; Available tells whether it did, and why not.
func Open() *Monitor { return &Monitor{backend: openNVML()} }

// Available reports whether NVML was found.
func (m *Monitor) Available() bool {
	if m == nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.backend != nil
}

// Read returns the current readings of every GPU, or nil without NVML.
func (m *Monitor) Read() []events.GPU {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.backend == nil {
		return nil
	}
	return m.backend.read()
}

// Close shuts NVML down.
func (m *Monitor) Close() {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.backend != nil {
		m.backend.close()
		m.backend = nil
	}
}
