package cpu

// goKernels are the portable micro-kernels, fastest first.
var goKernels = []microKernel{
	{name: "go3x3", mr: 3, nr: 3, fn: kernel3x3Go},
	{name: "go2x4", mr: 2, nr: 4, fn: kernel2x4Go},
	{name: "go3x4", mr: 3, nr: 4, fn: kernel3x4Go},
	{name: "go2x6", mr: 2, nr: 6, fn: kernel2x6Go},
	{name: "go4x4", mr: 4, nr: 4, fn: kernel4x4Go},
	{name: "go2x8", mr: 2, nr: 8, fn: kernel2x8Go},
	{name: "go4x8", mr: 4, nr: 8, fn: kernel4x8Go},
}

// availableKernels lists every micro-kernel this machine can run, the
// preferred one first.
func availableKernels() []*microKernel {
	var ks []*microKernel
	for i := range asmKernels() {
		ks = append(ks, &asmKernels()[i])
	}
	for i := range goKernels {
		ks = append(ks, &goKernels[i])
	}
	return ks
}

// bestKernel returns the preferred micro-kernel for this machine.
func bestKernel() *microKernel { return availableKernels()[0] }
