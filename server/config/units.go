package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// ByteSize is a number of bytes written in YAML or on the command line as a
// plain integer or with a unit: 512KiB, 16MiB, 2GiB, 1TiB, or KB/MB/GB/TB
// (powers of 1000).
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1},
}

// ParseByteSize parses a size such as "16MiB" or "1048576".
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	num := s
	for _, u := range byteUnits {
		if strings.HasSuffix(s, u.suffix) {
			mult = u.mult
			num = strings.TrimSpace(strings.TrimSuffix(s, u.suffix))
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || num == "" {
		return 0, fmt.Errorf("invalid size %q (want e.g. 16MiB, 2GiB or a number of bytes)", s)
	}
	v := f * float64(mult)
	if v > 1<<62 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return ByteSize(v), nil
}

// String formats the size with the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range byteUnits[:4] {
		if b != 0 && int64(b)%u.mult == 0 {
			return fmt.Sprintf("%d%s", int64(b)/u.mult, u.suffix)
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// Human formats the size for people, e.g. "11.8GiB".
func (b ByteSize) Human() string {
	v := float64(b)
	for _, u := range []string{"B", "KiB", "MiB", "GiB", "TiB"} {
		if v < 1024 || u == "TiB" {
			return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64) + u
		}
		v /= 1024
	}
	return b.String()
}

// Set implements flag.Value.
func (b *ByteSize) Set(s string) error {
	v, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// UnmarshalYAML accepts an integer or a string with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a size must be a scalar", n.Line)
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// Duration is a time.Duration written as "30s", "10m" or "168h".
type Duration time.Duration

// String formats the duration as time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// Set implements flag.Value.
func (d *Duration) Set(s string) error {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. 30s, 10m)", s)
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a duration must be a scalar", n.Line)
	}
	if err := d.Set(n.Value); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}

// MarshalJSON writes the duration as seconds (a JSON number), the unit of
// every duration in Kiln's JSON.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(time.Duration(d).Seconds(), 'f', -1, 64)), nil
}

// UnmarshalJSON reads seconds (a number) or a duration string ("2.5s").
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		s, err := strconv.Unquote(string(b))
		if err != nil {
			return fmt.Errorf("invalid duration %s", b)
		}
		return d.Set(s)
	}
	secs, err := strconv.ParseFloat(string(b), 64)
	if err != nil || secs < 0 || math.IsInf(secs, 0) || secs > math.MaxInt64/1e9 {
		return fmt.Errorf("invalid duration %s (want seconds or a string like \"30s\")", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Budget is a memory budget: "auto" (decided by the hardware profile), a
// percentage of the device memory ("80%") or an absolute size ("12GiB").
type Budget struct {
	Auto    bool
	Percent float64  // 0 < Percent ≤ 100 when set
	Bytes   ByteSize // when neither Auto nor Percent
}

// ParseBudget parses "auto", "80%" or a size.
func ParseBudget(s string) (Budget, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "auto":
		return Budget{Auto: true}, nil
	case strings.HasSuffix(s, "%"):
		p, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
		if err != nil || p <= 0 || p > 100 {
			return Budget{}, fmt.Errorf("invalid memory budget %q (want a percentage in (0, 100])", s)
		}
		return Budget{Percent: p}, nil
	}
	b, err := ParseByteSize(s)
	if err != nil {
		return Budget{}, fmt.Errorf("invalid memory budget %q (want auto, a percentage like 80%% or a size like 12GiB)", s)
	}
	if b == 0 {
		return Budget{}, fmt.Errorf("invalid memory budget %q: zero", s)
	}
	return Budget{Bytes: b}, nil
}

// String formats the budget as ParseBudget reads it.
func (b Budget) String() string {
	switch {
	case b.Auto:
		return "auto"
	case b.Percent > 0:
		return strconv.FormatFloat(b.Percent, 'f', -1, 64) + "%"
	}
	return b.Bytes.String()
}

// Set implements flag.Value.
func (b *Budget) Set(s string) error {
	v, err := ParseBudget(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// UnmarshalYAML parses a budget scalar.
func (b *Budget) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a memory budget must be a scalar", n.Line)
	}
	if err := b.Set(n.Value); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}

// Resolve returns the budget in bytes for a device with total bytes of
// memory; fallback is used for "auto".
func (b Budget) Resolve(total int64, fallback Budget) int64 {
	if b.Auto {
		if fallback.Auto {
			return total * 8 / 10
		}
		return fallback.Resolve(total, Budget{Auto: true})
	}
	if b.Percent > 0 {
		return int64(float64(total) * b.Percent / 100)
	}
	return int64(b.Bytes)
}
