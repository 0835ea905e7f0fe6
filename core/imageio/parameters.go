package imageio

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Parameters are generation settings in the form AUTOMATIC1111 writes to
// the "parameters" PNG text chunk:
//
//	a red circle on a blue background
//	Negative prompt: blurry
//	Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1234, Size: 512x512, Model: sd15
//
// The prompt may span lines; the negative prompt line is left out when
// empty; the last line holds "Key: value" pairs separated by commas, with
// values that contain commas, colons or newlines written as JSON strings.
type Parameters struct {
	Prompt         string
	NegativePrompt string
	// Fields are the pairs of the last line, in order.
	Fields []Field
}

// Field is one "Key: value" pair of the parameters line.
type Field struct {
	Key, Value string
}

// Get returns the value of the first field named key.
func (p *Parameters) Get(key string) (string, bool) {
	for _, f := range p.Fields {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

// Set replaces the first field named key, or appends it.
func (p *Parameters) Set(key, value string) {
	for i, f := range p.Fields {
		if f.Key == key {
			p.Fields[i].Value = value
			return
		}
	}
	p.Fields = append(p.Fields, Field{key, value})
}

// Int returns a field as an integer.
func (p *Parameters) Int(key string) (int64, error) {
	v, ok := p.Get(key)
	if !ok {
		return 0, fmt.Errorf("imageio: parameters have no %q", key)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("imageio: parameter %q: %w", key, err)
	}
	return n, nil
}

// Float returns a field as a number.
func (p *Parameters) Float(key string) (float64, error) {
	v, ok := p.Get(key)
	if !ok {
		return 0, fmt.Errorf("imageio: parameters have no %q", key)
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, fmt.Errorf("imageio: parameter %q: %w", key, err)
	}
	return f, nil
}

// quote writes a value as AUTOMATIC1111 does: as is unless it holds a
// comma, a colon or a newline (or starts with a quote, which would read
// back as a quoted value), then as a JSON string.
func quote(v string) string {
	if !strings.ContainsAny(v, ",:\n") && !strings.HasPrefix(strings.TrimSpace(v), `"`) && strings.TrimSpace(v) == v {
		return v
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// String formats the parameters as the text of the chunk.
func (p Parameters) String() string {
	var sb strings.Builder
	sb.WriteString(p.Prompt)
	if p.NegativePrompt != "" {
		sb.WriteString("\nNegative prompt: ")
		sb.WriteString(p.NegativePrompt)
	}
	if len(p.Fields) > 0 {
		sb.WriteByte('\n')
		for i, f := range p.Fields {
			if i > 0 {
				sb.WriteString(", ")
			}
			sb.WriteString(f.Key)
			sb.WriteString(": ")
			sb.WriteString(quote(f.Value))
		}
	}
	return sb.String()
}

// ParseParameters reads parameters text as AUTOMATIC1111 writes it (and
// reads it: the last line is the fields line only if it holds at least
// three "Key: value" pairs).
func ParseParameters(text string) (Parameters, error) {
	var p Parameters
	text = strings.TrimSpace(strings.ReplaceAll(text, "\r\n", "\n"))
	if text == "" {
		return p, errors.New("imageio: empty parameters")
	}
	lines := strings.Split(text, "\n")
	last := lines[len(lines)-1]
	if fields, ok := parseFields(last); ok && len(fields) >= 3 {
		p.Fields = fields
		lines = lines[:len(lines)-1]
	}
	negative := false
	var prompt, neg []string
	for _, line := range lines {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "Negative prompt:"); ok && !negative {
			negative = true
			line = strings.TrimSpace(rest)
		}
		if negative {
			neg = append(neg, line)
		} else {
			prompt = append(prompt, line)
		}
	}
	p.Prompt = strings.Join(prompt, "\n")
	p.NegativePrompt = strings.Join(neg, "\n")
	return p, nil
}

// parseFields splits "Key: value, Key: "quoted, value", ..." into fields.
// Keys start with a word character and hold word characters, spaces,
// hyphens and slashes.
func parseFields(line string) ([]Field, bool) {
	var out []Field
	s := line
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return out, len(out) > 0
		}
		colon := strings.IndexByte(s, ':')
		if colon < 1 {
			return out, false
		}
		key := strings.TrimSpace(s[:colon])
		if !validKey(key) {
			return out, false
		}
		s = strings.TrimLeft(s[colon+1:], " \t")
		var val string
		if strings.HasPrefix(s, `"`) {
			end := closingQuote(s)
			if end < 0 {
				return out, false
			}
			if err := json.Unmarshal([]byte(s[:end+1]), &val); err != nil {
				return out, false
			}
			s = strings.TrimLeft(s[end+1:], " \t")
			if s != "" && s[0] != ',' {
				return out, false
			}
		} else {
			comma := strings.IndexByte(s, ',')
			if comma < 0 {
				val, s = strings.TrimSpace(s), ""
			} else {
				val, s = strings.TrimSpace(s[:comma]), s[comma:]
			}
		}
		out = append(out, Field{key, val})
		if s == "" {
			return out, true
		}
		s = s[1:] // the comma
	}
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i, r := range k {
		word := r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r > 127
		if i == 0 && !word {
			return false
		}
		if !word && r != ' ' && r != '-' && r != '/' {
			return false
		}
	}
	return true
}

// closingQuote returns the index of the quote that closes the JSON string
// starting at s[0], or -1.
func closingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}
