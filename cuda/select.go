package cuda

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/tensor"
)

// Selection is the compute backend picked for a --device flag.
type Selection struct {
	// Backend computes: a CUDA view with fp16 activations, or the CPU.
	Backend backend.Backend
	// Device is the GPU behind Backend, nil on the CPU.
	Device *Device
	// Reason is one line saying which backend was chosen and why.
	Reason string
}

// Close releases the GPU, if any.
func (s *Selection) Close() error {
	if s.Device != nil {
		return s.Device.Close()
	}
	return nil
}

// ParseDevice checks a --device value: "auto", "cpu", "cuda" or "cuda:N".
// It returns the ordinal for cuda (-1 for auto and cpu).
func ParseDevice(spec string) (kind string, ordinal int, err error) {
	switch s := strings.TrimSpace(strings.ToLower(spec)); {
	case s == "" || s == "auto":
		return "auto", -1, nil
	case s == "cpu":
		return "cpu", -1, nil
	case s == "cuda" || s == "gpu":
		return "cuda", 0, nil
	case strings.HasPrefix(s, "cuda:"):
		n, err := strconv.Atoi(s[len("cuda:"):])
		if err != nil || n < 0 {
			return "", 0, fmt.Errorf("device %q: want cuda:N with N a device number", spec)
		}
		return "cuda", n, nil
	}
	return "", 0, fmt.Errorf("device %q: want auto, cpu or cuda:N", spec)
}

// Select opens the backend a --device value names. "auto" takes cuda:0 when
// a driver, cuBLAS and a device are found and the CPU otherwise; "cuda:N"
// fails when that GPU cannot be used. Reason says which and why.
func Select(spec string) (*Selection, error) {
	sels, err := SelectAll(spec, 1)
	if err != nil {
		return nil, err
	}
	return sels[0], nil
}

// SelectAll is Select for servers that run one worker per GPU: "auto" opens
// every GPU (at most limit, 0 meaning all) or the CPU when there is none;
// "cuda:N" opens that one.
func SelectAll(spec string, limit int) ([]*Selection, error) {
	kind, ord, err := ParseDevice(spec)
	if err != nil {
		return nil, err
	}
	cpuSel := func(reason string) []*Selection {
		return []*Selection{{Backend: cpu.New(), Reason: reason}}
	}
	switch kind {
	case "cpu":
		return cpuSel("device cpu: the CPU backend, as asked"), nil
	case "cuda":
		d, err := Open(ord, DefaultOptions())
		if err != nil {
			return nil, err
		}
		return []*Selection{gpuSelection(d, "as asked")}, nil
	}
	n, err := DeviceCount()
	if err != nil {
		// No driver or no device: an ordinary CPU machine, not an error
		// to report (--device cuda, or kiln doctor, shows the details).
		return cpuSel("device cpu: no CUDA GPU found (kiln doctor shows what was looked for)"), nil
	}
	if n == 0 {
		return cpuSel("device cpu: no GPU: the CUDA driver sees no device"), nil
	}
	if limit > 0 && n > limit {
		n = limit
	}
	var out []*Selection
	var errs []error
	for i := 0; i < n; i++ {
		d, err := Open(i, DefaultOptions())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, gpuSelection(d, "found by auto"))
	}
	if len(out) == 0 {
		return cpuSel("device cpu: " + errors.Join(errs...).Error()), nil
	}
	return out, nil
}

func gpuSelection(d *Device, why string) *Selection {
	in := d.Info()
	reason := fmt.Sprintf("device cuda:%d: %s (sm_%d%d, %.0f GiB, driver %d.%d, cuBLAS %d), %s",
		in.Ordinal, in.Name, in.Major, in.Minor, float64(in.Memory)/(1<<30), in.Driver/1000, (in.Driver%1000)/10, in.CuBLASMajor, why)
	return &Selection{Backend: d.Backend(tensor.F16), Device: d, Reason: reason}
}
