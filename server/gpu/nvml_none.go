//go:build !(cgo && linux)

package gpu

// openNVML has no NVML to open in builds without cgo.
func openNVML() reader { return nil }
