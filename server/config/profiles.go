package config

import (
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/kiln-project/kiln/configs"
)

// Profile is a performance profile (configs/profiles/*.yaml): the defaults
// a request starts from and the caps it may not exceed.
type Profile struct {
	Name        string  `yaml:"name" json:"name"`
	Description string  `yaml:"description" json:"description"`
	Sampler     string  `yaml:"sampler" json:"sampler"`
	Steps       int     `yaml:"steps" json:"steps"`
	Guidance    float64 `yaml:"guidance" json:"guidance"`
	Width       int     `yaml:"width" json:"width"`
	Height      int     `yaml:"height" json:"height"`
	// MaxPixels, MaxSteps and MaxN cap overrides (a tenant's own limits
	// apply on top).
	MaxPixels int `yaml:"max_pixels" json:"max_pixels"`
	MaxSteps  int `yaml:"max_steps" json:"max_steps"`
	MaxN      int `yaml:"max_n" json:"max_n"`
	// MaxBatch caps how many images a worker generates in one batch.
	MaxBatch int `yaml:"max_batch" json:"max_batch"`
	// Precision is the GPU precision: fp16, bf16 or fp32.
	Precision string `yaml:"precision" json:"precision"`
	// LatencyTarget is the p95 job latency the quality policy aims for.
	LatencyTarget Duration `yaml:"latency_target" json:"latency_target"`
	// Quality "adaptive" lets the adaptive quality policy adjust requests
	// of this profile under load ("" or "fixed": never).
	Quality string `yaml:"quality" json:"quality,omitempty"`
}

// Validate checks a profile's values.
func (p Profile) Validate() error {
	if p.Name == "" {
		return fmt.Errorf("profile without a name")
	}
	if p.Steps <= 0 || p.Width <= 0 || p.Height <= 0 || p.Guidance < 0 {
		return fmt.Errorf("profile %s: steps, width, height must be positive and guidance not negative", p.Name)
	}
	if p.Quality != "" && p.Quality != "fixed" && p.Quality != "adaptive" {
		return fmt.Errorf("profile %s: quality must be fixed or adaptive, got %q", p.Name, p.Quality)
	}
	if p.MaxPixels < p.Width*p.Height || p.MaxSteps < p.Steps || p.MaxN <= 0 || p.MaxBatch <= 0 {
		return fmt.Errorf("profile %s: caps (max_pixels, max_steps, max_n, max_batch) must admit the defaults", p.Name)
	}
	switch p.Precision {
	case "fp16", "bf16", "fp32":
	default:
		return fmt.Errorf("profile %s: precision %q: want fp16, bf16 or fp32", p.Name, p.Precision)
	}
	if p.Sampler == "" {
		return fmt.Errorf("profile %s: no sampler", p.Name)
	}
	return nil
}

// Profiles loads the embedded performance profiles, keyed by name.
func Profiles() (map[string]Profile, error) {
	out := map[string]Profile{}
	err := loadDir("profiles", func(name string, data []byte) error {
		var p Profile
		if err := decodeStrict(data, &p); err != nil {
			return err
		}
		if want := strings.TrimSuffix(path.Base(name), ".yaml"); p.Name != want {
			return fmt.Errorf("name %q differs from the file name %q", p.Name, want)
		}
		if err := p.Validate(); err != nil {
			return err
		}
		out[p.Name] = p
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// HardwareMatch says which devices a hardware profile applies to.
type HardwareMatch struct {
	// CPU marks the profile for machines without a GPU.
	CPU bool `yaml:"cpu"`
	// GPUNameContains must occur in the NVML device name (case-insensitive).
	GPUNameContains string `yaml:"gpu_name_contains"`
	// MinMemoryGiB is the least device memory.
	MinMemoryGiB float64 `yaml:"min_memory_gib"`
}

// Hardware is a hardware profile (configs/hardware/*.yaml).
type Hardware struct {
	Name         string        `yaml:"name"`
	Match        HardwareMatch `yaml:"match"`
	MemoryBudget Budget        `yaml:"memory_budget"`
	MaxBatch     int           `yaml:"max_batch"`
}

// HardwareProfiles loads the embedded hardware profiles, keyed by name.
func HardwareProfiles() (map[string]Hardware, error) {
	out := map[string]Hardware{}
	err := loadDir("hardware", func(name string, data []byte) error {
		var h Hardware
		if err := decodeStrict(data, &h); err != nil {
			return err
		}
		if want := strings.TrimSuffix(path.Base(name), ".yaml"); h.Name != want {
			return fmt.Errorf("name %q differs from the file name %q", h.Name, want)
		}
		if h.MaxBatch <= 0 || h.MemoryBudget.Auto {
			return fmt.Errorf("hardware %s: max_batch must be positive and memory_budget not auto", h.Name)
		}
		out[h.Name] = h
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// MatchHardware picks the profile for a device: gpuName "" means the CPU.
// Among matching GPU profiles the most specific wins (largest memory
// threshold, then longest name fragment).
func MatchHardware(profiles map[string]Hardware, gpuName string, memBytes int64) (Hardware, bool) {
	var best Hardware
	found := false
	names := make([]string, 0, len(profiles))
	for n := range profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h := profiles[n]
		if gpuName == "" {
			if h.Match.CPU {
				return h, true
			}
			continue
		}
		if h.Match.CPU {
			continue
		}
		if !strings.Contains(strings.ToLower(gpuName), strings.ToLower(h.Match.GPUNameContains)) {
			continue
		}
		if float64(memBytes) < h.Match.MinMemoryGiB*(1<<30) {
			continue
		}
		if !found || h.Match.MinMemoryGiB > best.Match.MinMemoryGiB ||
			(h.Match.MinMemoryGiB == best.Match.MinMemoryGiB && len(h.Match.GPUNameContains) > len(best.Match.GPUNameContains)) {
			best, found = h, true
		}
	}
	return best, found
}

func loadDir(dir string, each func(name string, data []byte) error) error {
	entries, err := fs.ReadDir(configs.FS, dir)
	if err != nil {
		return fmt.Errorf("config: %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		name := dir + "/" + e.Name()
		data, err := readEmbedded(name)
		if err != nil {
			return fmt.Errorf("config: %s: %w", name, err)
		}
		if err := each(name, data); err != nil {
			return fmt.Errorf("config: %s: %w", name, err)
		}
	}
	return nil
}
