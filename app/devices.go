package app

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/cuda"
)

// Device is a compute device that workers run on.
type Device struct {
	// Name is "cpu" or "cuda:N".
	Name string
	// Backend computes on the device.
	Backend backend.Backend
	// GPUName and Memory describe a GPU (empty on the CPU): with NVML's
	// reading of the same GPU, they pick its hardware profile.
	GPUName string
	Memory  int64
	// Close releases the device once its workers have stopped (nil:
	// nothing to release).
	Close func() error
}

// GPU reports whether the device is a GPU.
func (d Device) GPU() bool { return d.Name != "cpu" }

// DeviceSelector opens the devices a --device value names — every GPU for
// "auto" (the CPU when there is none), the CPU for "cpu", one GPU for
// "cuda" or "cuda:N" — and returns one line saying which and why.
type DeviceSelector func(spec string) (devices []Device, reason string, err error)

// SelectDevices is the DeviceSelector of `kiln serve`: the CUDA backend
// (driver, cuBLAS and kernels found at run time) on every GPU it can open,
// otherwise the CPU backend.
func SelectDevices(spec string) ([]Device, string, error) {
	sels, err := cuda.SelectAll(spec, 0)
	if err != nil {
		return nil, "", err
	}
	var devs []Device
	var reasons []string
	for _, s := range sels {
		reasons = append(reasons, s.Reason)
		if s.Device == nil {
			devs = append(devs, Device{Name: "cpu", Backend: s.Backend})
			continue
		}
		info := s.Device.Info()
		devs = append(devs, Device{Name: fmt.Sprintf("cuda:%d", info.Ordinal), Backend: s.Backend,
			GPUName: info.Name, Memory: info.Memory, Close: s.Close})
	}
	if len(devs) == 0 {
		return nil, "", errors.New("no device")
	}
	return devs, strings.Join(reasons, "; "), nil
}

// closeDevices releases the devices of a stopped server.
func closeDevices(devs []Device) error {
	var errs []error
	for _, d := range devs {
		if d.Close != nil {
			if err := d.Close(); err != nil {
				errs = append(errs, fmt.Errorf("serve: close %s: %w", d.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}
