//go:build !amd64 || purego

package cpu

// asmKernels is empty where no assembly kernel exists.
func asmKernels() []microKernel { return nil }
