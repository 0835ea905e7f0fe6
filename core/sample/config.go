package sample

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
)

// Config is a scheduler configuration in the diffusers format
// (scheduler/scheduler_config.json). As in diffusers, the keys present in
// the file override the defaults of whichever scheduler class is built from
// it, so one file serves every sampler; the class it names is the default.
type Config struct {
	// ClassName is the diffusers class the file was written for
	// (for example "EulerDiscreteScheduler"); it may be empty.
	ClassName string
	values    map[string]any
}

// value kinds of configuration keys.
type keyKind int

const (
	kindInt keyKind = iota
	kindFloat
	kindBool
	kindString
	kindFloats // list of numbers or null
	kindInts   // list of integers
	kindNull   // only null is accepted (features Kiln does not implement)
)

// knownKeys lists every configuration key of the scheduler classes Kiln
// implements, with its JSON kind. A key not listed here is refused: it may
// change behaviour in a way Kiln would silently ignore.
var knownKeys = map[string]keyKind{
	"num_train_timesteps":        kindInt,
	"beta_start":                 kindFloat,
	"beta_end":                   kindFloat,
	"beta_schedule":              kindString,
	"trained_betas":              kindFloats,
	"prediction_type":            kindString,
	"interpolation_type":         kindString,
	"use_karras_sigmas":          kindBool,
	"use_exponential_sigmas":     kindBool,
	"use_beta_sigmas":            kindBool,
	"use_lu_lambdas":             kindBool,
	"use_flow_sigmas":            kindBool,
	"flow_shift":                 kindFloat,
	"sigma_min":                  kindFloat,
	"sigma_max":                  kindFloat,
	"timestep_spacing":           kindString,
	"timestep_type":              kindString,
	"steps_offset":               kindInt,
	"rescale_betas_zero_snr":     kindBool,
	"final_sigmas_type":          kindString,
	"clip_sample":                kindBool,
	"clip_sample_range":          kindFloat,
	"set_alpha_to_one":           kindBool,
	"thresholding":               kindBool,
	"dynamic_thresholding_ratio": kindFloat,
	"sample_max_value":           kindFloat,
	"variance_type":              kindString,
	"skip_prk_steps":             kindBool,
	"solver_order":               kindInt,
	"algorithm_type":             kindString,
	"solver_type":                kindString,
	"lower_order_final":          kindBool,
	"euler_at_final":             kindBool,
	"lambda_min_clipped":         kindFloat,
	"use_dynamic_shifting":       kindBool,
	"time_shift_type":            kindString,
	"predict_x0":                 kindBool,
	"disable_corrector":          kindInts,
	"solver_p":                   kindNull,
	"shift_terminal":             kindNull,
	"original_inference_steps":   kindInt,
	"timestep_scaling":           kindFloat,
}

// ParseConfig parses a diffusers scheduler_config.json. Keys starting with
// "_" are metadata; "_use_default_values" names keys that held the writing
// class's defaults, which are dropped so that each class uses its own
// defaults, as diffusers does. Unknown keys and values of the wrong type are
// errors. JSON extended with Infinity/NaN (as Python writes) is accepted.
func ParseConfig(data []byte) (*Config, error) {
	raw := map[string]json.RawMessage{}
	if err := json.Unmarshal(pythonJSON(data), &raw); err != nil {
		return nil, fmt.Errorf("scheduler config: %w", err)
	}
	c := &Config{values: map[string]any{}}
	drop := map[string]bool{}
	if r, ok := raw["_use_default_values"]; ok {
		var names []string
		if err := json.Unmarshal(r, &names); err != nil {
			return nil, fmt.Errorf("scheduler config: _use_default_values: %w", err)
		}
		for _, n := range names {
			drop[n] = true
		}
	}
	if r, ok := raw["_class_name"]; ok {
		if err := json.Unmarshal(r, &c.ClassName); err != nil {
			return nil, fmt.Errorf("scheduler config: _class_name: %w", err)
		}
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.HasPrefix(k, "_") || drop[k] {
			continue
		}
		kind, ok := knownKeys[k]
		if !ok {
			return nil, fmt.Errorf("scheduler config: unknown key %q (Kiln does not know what it changes)", k)
		}
		v, err := decodeValue(raw[k], kind)
		if err != nil {
			return nil, fmt.Errorf("scheduler config: %s: %w", k, err)
		}
		c.values[k] = v
	}
	return c, nil
}

// Set overrides one configuration key, as keyword arguments to diffusers'
// from_config do. The value must have the key's type (int, float64, bool,
// string, []float64, []int or nil).
func (c *Config) Set(key string, value any) error {
	kind, ok := knownKeys[key]
	if !ok {
		return fmt.Errorf("scheduler config: unknown key %q", key)
	}
	b, err := json.Marshal(value)
	if err != nil {
		return fmt.Errorf("scheduler config: %s: %w", key, err)
	}
	v, err := decodeValue(b, kind)
	if err != nil {
		return fmt.Errorf("scheduler config: %s: %w", key, err)
	}
	if c.values == nil {
		c.values = map[string]any{}
	}
	c.values[key] = v
	return nil
}

// Clone returns an independent copy of the configuration.
func (c *Config) Clone() *Config {
	n := &Config{ClassName: c.ClassName, values: make(map[string]any, len(c.values))}
	for k, v := range c.values {
		n.values[k] = v
	}
	return n
}

// TrainTimesteps returns num_train_timesteps (diffusers' default 1000 when
// the file leaves it out).
func (c *Config) TrainTimesteps() int {
	if v, ok := c.values["num_train_timesteps"].(int); ok && v > 0 {
		return v
	}
	return 1000
}

// Has reports whether the configuration sets key explicitly.
func (c *Config) Has(key string) bool {
	_, ok := c.values[key]
	return ok
}

// decodeValue decodes one JSON value of the given kind. Numbers come back
// as float64 (kindFloat), int (kindInt); null is nil for every kind except
// bool, int and string where it means "absent" only if the class default is
// null, so it is kept as nil.
func decodeValue(r json.RawMessage, kind keyKind) (any, error) {
	r = bytes.TrimSpace(r)
	if string(r) == "null" {
		return nil, nil
	}
	switch kind {
	case kindInt:
		var f float64
		if err := json.Unmarshal(r, &f); err != nil {
			return nil, fmt.Errorf("want an integer: %w", err)
		}
		if f != math.Trunc(f) || math.Abs(f) > 1<<31 {
			return nil, fmt.Errorf("want an integer, got %v", f)
		}
		return int(f), nil
	case kindFloat:
		return decodeFloat(r)
	case kindBool:
		var b bool
		if err := json.Unmarshal(r, &b); err != nil {
			return nil, fmt.Errorf("want true or false: %w", err)
		}
		return b, nil
	case kindString:
		var s string
		if err := json.Unmarshal(r, &s); err != nil {
			return nil, fmt.Errorf("want a string: %w", err)
		}
		return s, nil
	case kindFloats:
		var items []json.RawMessage
		if err := json.Unmarshal(r, &items); err != nil {
			return nil, fmt.Errorf("want a list of numbers: %w", err)
		}
		out := make([]float64, len(items))
		for i, it := range items {
			f, err := decodeFloat(it)
			if err != nil {
				return nil, fmt.Errorf("item %d: %w", i, err)
			}
			out[i] = f
		}
		return out, nil
	case kindInts:
		var out []int
		if err := json.Unmarshal(r, &out); err != nil {
			return nil, fmt.Errorf("want a list of integers: %w", err)
		}
		return out, nil
	case kindNull:
		return nil, fmt.Errorf("only null is supported (Kiln does not implement this feature), got %s", r)
	}
	return nil, fmt.Errorf("internal: unknown kind %d", kind)
}

func decodeFloat(r json.RawMessage) (float64, error) {
	var s string
	if json.Unmarshal(r, &s) == nil {
		switch s {
		case "Infinity":
			return math.Inf(1), nil
		case "-Infinity":
			return math.Inf(-1), nil
		case "NaN":
			return math.NaN(), nil
		}
		return 0, fmt.Errorf("want a number, got %q", s)
	}
	var f float64
	if err := json.Unmarshal(r, &f); err != nil {
		return 0, fmt.Errorf("want a number: %w", err)
	}
	return f, nil
}

// pythonJSON rewrites the bare tokens Infinity, -Infinity and NaN that
// Python's json module writes outside strings into quoted strings, so that
// encoding/json can parse the document.
func pythonJSON(data []byte) []byte {
	var out bytes.Buffer
	inString, escaped := false, false
	for i := 0; i < len(data); i++ {
		ch := data[i]
		if inString {
			out.WriteByte(ch)
			switch {
			case escaped:
				escaped = false
			case ch == '\\':
				escaped = true
			case ch == '"':
				inString = false
			}
			continue
		}
		if ch == '"' {
			inString = true
			out.WriteByte(ch)
			continue
		}
		replaced := false
		for _, tok := range []string{"-Infinity", "Infinity", "NaN"} {
			if bytes.HasPrefix(data[i:], []byte(tok)) {
				out.WriteString(`"` + tok + `"`)
				i += len(tok) - 1
				replaced = true
				break
			}
		}
		if !replaced {
			out.WriteByte(ch)
		}
	}
	return out.Bytes()
}
