package imageio

import (
	"bytes"
	"testing"
)

// FuzzReadText feeds arbitrary bytes to the PNG text reader: it may fail,
// never panic.
func FuzzReadText(f *testing.F) {
	var buf bytes.Buffer
	WritePNG(&buf, testImage(), Text{ParametersKey, "p\nSteps: 1, Sampler: Euler, Seed: 2"}, Text{"x", "ünïcode 🚀"})
	f.Add(buf.Bytes())
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ReadText(bytes.NewReader(data))
	})
}

// FuzzParameters checks that parsing never panics and that formatting
// what was parsed parses back to the same parameters.
func FuzzParameters(f *testing.F) {
	f.Add("a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
	f.Add("x\nSteps: 1, A: \"q, \\\"r\\\"\", B: 2")
	f.Add("Negative prompt: only\nK: v, L: w, M: x")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseParameters(s)
		if err != nil {
			return
		}
		q, err := ParseParameters(p.String())
		if err != nil {
			if p.String() == "" {
				return
			}
			t.Fatalf("re-parse of %q: %v", p.String(), err)
		}
		if len(q.Fields) != len(p.Fields) {
			t.Fatalf("fields %d → %d for %q", len(p.Fields), len(q.Fields), s)
		}
	})
}
