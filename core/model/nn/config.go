package nn

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
)

// ConfigReader decodes a diffusers config.json strictly: the model package
// classifies every field name (implemented, ignored, or rejected unless it
// has its default value) and reads typed values; the first problem is kept
// and names the field. JSON null counts as "absent" only where a getter
// says so.
type ConfigReader struct {
	component string
	fields    map[string]json.RawMessage
	err       error
}

// NewConfigReader parses data as a JSON object. component ("unet", "vae")
// prefixes error messages.
func NewConfigReader(component string, data []byte) (*ConfigReader, error) {
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&fields); err != nil {
		return nil, fmt.Errorf("%s config: %w", component, err)
	}
	if fields == nil {
		return nil, fmt.Errorf("%s config: not a JSON object", component)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s config: trailing data after the JSON object", component)
	}
	return &ConfigReader{component: component, fields: fields}, nil
}

// Names returns the field names present, sorted.
func (r *ConfigReader) Names() []string {
	names := make([]string, 0, len(r.fields))
	for k := range r.fields {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Err returns the first problem recorded, or nil.
func (r *ConfigReader) Err() error { return r.err }

// Failf records a problem with field name unless one is already recorded.
func (r *ConfigReader) Failf(name, format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%s config: field %q: %s", r.component, name, fmt.Sprintf(format, args...))
	}
}

// Null reports whether the field is absent or JSON null.
func (r *ConfigReader) Null(name string) bool {
	raw, ok := r.fields[name]
	return !ok || string(bytes.TrimSpace(raw)) == "null"
}

// Raw returns the field's JSON text ("" when absent).
func (r *ConfigReader) Raw(name string) string {
	return string(bytes.TrimSpace(r.fields[name]))
}

func (r *ConfigReader) decode(name string, dst any) bool {
	if r.Null(name) {
		r.Failf(name, "is null, want a value")
		return false
	}
	if err := json.Unmarshal(r.fields[name], dst); err != nil {
		r.Failf(name, "cannot read %s: %v", r.Raw(name), err)
		return false
	}
	return true
}

// Int reads an integer field; absent gives def; null is an error.
func (r *ConfigReader) Int(name string, def int) int {
	if _, ok := r.fields[name]; !ok {
		return def
	}
	v, ok := r.intValue(name, r.fields[name])
	if !ok {
		return def
	}
	return v
}

// OptInt reads an integer field that may be absent or null (ok false).
func (r *ConfigReader) OptInt(name string) (int, bool) {
	if r.Null(name) {
		return 0, false
	}
	return r.intValue(name, r.fields[name])
}

func (r *ConfigReader) intValue(name string, raw json.RawMessage) (int, bool) {
	var f float64
	if string(bytes.TrimSpace(raw)) == "null" {
		r.Failf(name, "is null, want an integer")
		return 0, false
	}
	if err := json.Unmarshal(raw, &f); err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<40 {
		r.Failf(name, "want an integer, got %s", bytes.TrimSpace(raw))
		return 0, false
	}
	return int(f), true
}

// Float reads a number field; absent gives def; null is an error.
func (r *ConfigReader) Float(name string, def float64) float64 {
	if _, ok := r.fields[name]; !ok {
		return def
	}
	var f float64
	if !r.decode(name, &f) {
		return def
	}
	return f
}

// OptFloat reads a number field that may be absent or null (ok false).
func (r *ConfigReader) OptFloat(name string) (float64, bool) {
	if r.Null(name) {
		return 0, false
	}
	var f float64
	if !r.decode(name, &f) {
		return 0, false
	}
	return f, true
}

// Bool reads a boolean field; absent gives def; null is an error.
func (r *ConfigReader) Bool(name string, def bool) bool {
	if _, ok := r.fields[name]; !ok {
		return def
	}
	var b bool
	if !r.decode(name, &b) {
		return def
	}
	return b
}

// String reads a string field; absent gives def; null is an error.
func (r *ConfigReader) String(name, def string) string {
	if _, ok := r.fields[name]; !ok {
		return def
	}
	var s string
	if !r.decode(name, &s) {
		return def
	}
	return s
}

// OptString reads a string field that may be absent or null (ok false).
func (r *ConfigReader) OptString(name string) (string, bool) {
	if r.Null(name) {
		return "", false
	}
	var s string
	if !r.decode(name, &s) {
		return "", false
	}
	return s, true
}

// Strings reads a list of strings; absent gives a copy of def.
func (r *ConfigReader) Strings(name string, def []string) []string {
	if _, ok := r.fields[name]; !ok {
		return slices.Clone(def)
	}
	var s []string
	if !r.decode(name, &s) {
		return slices.Clone(def)
	}
	return s
}

// Ints reads a list of integers; absent gives a copy of def.
func (r *ConfigReader) Ints(name string, def []int) []int {
	if _, ok := r.fields[name]; !ok {
		return slices.Clone(def)
	}
	var raws []json.RawMessage
	if !r.decode(name, &raws) {
		return slices.Clone(def)
	}
	out := make([]int, len(raws))
	for i, raw := range raws {
		v, ok := r.intValue(name, raw)
		if !ok {
			return slices.Clone(def)
		}
		out[i] = v
	}
	return out
}

// OptFloats reads a list of numbers that may be absent or null (nil).
func (r *ConfigReader) OptFloats(name string) []float64 {
	if r.Null(name) {
		return nil
	}
	var f []float64
	if !r.decode(name, &f) {
		return nil
	}
	return f
}

// IntPerBlock reads a field that is either one integer, repeated n times,
// or a list of exactly n integers (diffusers' per-block settings). Absent
// or null gives def repeated n times when nullOK, else an error for null.
func (r *ConfigReader) IntPerBlock(name string, def, n int, nullOK bool) []int {
	if _, ok := r.fields[name]; !ok || (nullOK && r.Null(name)) {
		return repeat(def, n)
	}
	raw := bytes.TrimSpace(r.fields[name])
	if len(raw) > 0 && raw[0] == '[' {
		v := r.Ints(name, nil)
		if r.err == nil && len(v) != n {
			r.Failf(name, "lists %d values, the model has %d blocks", len(v), n)
		}
		if len(v) != n {
			return repeat(def, n)
		}
		return v
	}
	v, ok := r.intValue(name, r.fields[name])
	if !ok {
		return repeat(def, n)
	}
	return repeat(v, n)
}

func repeat(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}
