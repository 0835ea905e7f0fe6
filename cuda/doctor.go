package cuda

import (
	"fmt"
	"io"
	"strings"

	"github.com/kiln-project/kiln/cuda/internal/cu"
	"github.com/kiln-project/kiln/cuda/internal/kernels"
)

// Report is what `kiln doctor` prints: the libraries found, the GPUs, and
// whether Kiln's kernels load on each.
type Report struct {
	DriverPath    string
	DriverVersion int
	DriverErr     string
	CuBLASPath    string
	CuBLASMajor   int
	CuBLASErr     string
	CuDNNPath     string
	CuDNNErr      string
	ImageHash     string
	ImageNVCC     string
	Kernels       int
	Devices       []DeviceReport
}

// DeviceReport describes one GPU and the kernel check on it.
type DeviceReport struct {
	Info
	FreeMem      int64
	KernelsFound int
	Missing      []string
	SM90A        string // what became of the Hopper image on this device
	Err          string
}

// Probe looks for the driver, cuBLAS, cuDNN and every GPU, and checks that
// each kernel of the image loads on each GPU.
func Probe() Report {
	var r Report
	r.ImageHash = kernels.ImageHash()
	_, _, r.ImageNVCC, _ = kernels.Recorded()
	names := kernels.Names()
	r.Kernels = len(names)
	drv, err := loadDriver()
	if err != nil {
		r.DriverErr = err.Error()
		return r
	}
	r.DriverPath, r.DriverVersion = drv.LibraryPath(), drv.Version()
	if blas, err := loadCuBLAS(); err != nil {
		r.CuBLASErr = err.Error()
	} else {
		r.CuBLASPath, r.CuBLASMajor = blas.Path, blas.Major
	}
	if lib, err := cu.Open([]string{"libcudnn.so.9", "libcudnn.so.8"}, cu.LibraryDirs()); err != nil {
		r.CuDNNErr = err.Error()
	} else {
		r.CuDNNPath = lib.Path
	}
	n, err := drv.DeviceCount()
	if err != nil {
		r.DriverErr = err.Error()
		return r
	}
	for i := 0; i < n; i++ {
		dr := DeviceReport{Info: Info{Ordinal: i}}
		d, err := Open(i, DefaultOptions())
		if err != nil {
			dr.Err = err.Error()
			r.Devices = append(r.Devices, dr)
			continue
		}
		dr.Info = d.Info()
		dr.SM90A = d.sm90a
		_ = d.run(func() error {
			dr.FreeMem, _, _ = d.eng.memInfo()
			ce, ok := d.eng.(*cudaEngine)
			if !ok {
				return nil
			}
			for _, name := range names {
				if _, err := ce.function(name, 0); err != nil {
					dr.Missing = append(dr.Missing, name)
				} else {
					dr.KernelsFound++
				}
			}
			return nil
		})
		_ = d.Close()
		r.Devices = append(r.Devices, dr)
	}
	return r
}

// Usable reports whether at least one GPU can run Kiln.
func (r Report) Usable() bool {
	for _, d := range r.Devices {
		if d.Err == "" && len(d.Missing) == 0 {
			return true
		}
	}
	return false
}

// Print writes the report for people.
func (r Report) Print(w io.Writer) {
	line := func(k, v string) { fmt.Fprintf(w, "%-14s %s\n", k, v) }
	if r.DriverErr != "" && r.DriverPath == "" {
		line("CUDA driver", "not found: "+r.DriverErr)
	} else {
		line("CUDA driver", fmt.Sprintf("%s (CUDA %d.%d)", r.DriverPath, r.DriverVersion/1000, (r.DriverVersion%1000)/10))
	}
	if r.CuBLASPath != "" {
		line("cuBLAS", fmt.Sprintf("%s (major %d)", r.CuBLASPath, r.CuBLASMajor))
	} else if r.CuBLASErr != "" {
		line("cuBLAS", "not found: "+r.CuBLASErr)
	}
	if r.CuDNNPath != "" {
		line("cuDNN", r.CuDNNPath+" (optional)")
	} else if r.CuDNNErr != "" {
		line("cuDNN", "not found (optional)")
	}
	line("kernel image", fmt.Sprintf("%d kernels, sha256 %.12s…, built by %s", r.Kernels, r.ImageHash, r.ImageNVCC))
	if len(r.Devices) == 0 && r.DriverPath != "" {
		line("GPUs", "none: "+r.DriverErr)
	}
	for _, d := range r.Devices {
		k := fmt.Sprintf("cuda:%d", d.Ordinal)
		if d.Err != "" {
			line(k, "unusable: "+d.Err)
			continue
		}
		status := fmt.Sprintf("all %d kernels load", d.KernelsFound)
		if len(d.Missing) > 0 {
			status = fmt.Sprintf("%d kernels load, %d missing (%s)", d.KernelsFound, len(d.Missing), strings.Join(d.Missing, ", "))
		}
		line(k, fmt.Sprintf("%s, sm_%d%d, %d SMs, %.1f GiB (%.1f free); %s",
			d.Name, d.Major, d.Minor, d.SMs, float64(d.Memory)/(1<<30), float64(d.FreeMem)/(1<<30), status))
		line("", "Hopper image (sm_90a): "+d.SM90A)
	}
	if r.Usable() {
		line("verdict", "GPU ready: serve, generate and bench use the GPU with --device auto")
	} else {
		line("verdict", "no usable GPU: Kiln runs on the CPU")
	}
}
