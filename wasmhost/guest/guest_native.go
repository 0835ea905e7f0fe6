//go:build !wasip1

package guest

// Log does nothing outside a Wasm guest.
func Log(level int, msg string) {}

// Count does nothing outside a Wasm guest.
func Count(name string, delta int64) {}
