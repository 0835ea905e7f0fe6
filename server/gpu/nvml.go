//go:build cgo && linux

package gpu

import (
	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kiln-project/kiln/server/events"
)

type nvmlReader struct{}

// openNVML initialises NVML; nil when the library or a device is missing.
func openNVML() reader {
	if ret := nvml.Init(); ret != nvml.SUCCESS {
		return nil
	}
	if n, ret := nvml.DeviceGetCount(); ret != nvml.SUCCESS || n == 0 {
		nvml.Shutdown()
		return nil
	}
	return nvmlReader{}
}

func (nvmlReader) read() []events.GPU {
	n, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil
	}
	out := make([]events.GPU, 0, n)
	for i := 0; i < n; i++ {
		d, ret := nvml.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		g := events.GPU{Index: i}
		if name, ret := d.GetName(); ret == nvml.SUCCESS {
			g.Name = name
		}
		if mem, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
			g.MemoryUsed, g.MemoryTotal = int64(mem.Used), int64(mem.Total)
		}
		if u, ret := d.GetUtilizationRates(); ret == nvml.SUCCESS {
			g.Utilization = float64(u.Gpu) / 100
		}
		if t, ret := d.GetTemperature(nvml.TEMPERATURE_GPU); ret == nvml.SUCCESS {
			g.TemperatureC = float64(t)
		}
		if p, ret := d.GetPowerUsage(); ret == nvml.SUCCESS {
			g.PowerW = float64(p) / 1000
		}
		out = append(out, g)
	}
	return out
}

func (nvmlReader) close() { nvml.Shutdown() }
