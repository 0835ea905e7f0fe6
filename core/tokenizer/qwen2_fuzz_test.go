package tokenizer

import (
	"strings"
	"testing"
)

// FuzzQwen2Split: the pre-tokenizer covers any text with non-empty pieces
// in order (nothing dropped, nothing repeated).
func FuzzQwen2Split(f *testing.F) {
	for _, s := range []string{"it's 12:30\n\n  and\ttabs ", "日本語 🦊", "a\r\n\r\n b", "  ", "'LL'd", "x\u00a0y\u2003z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var b strings.Builder
		splitQwen2(s, func(p string) {
			if p == "" {
				t.Fatalf("empty piece in %q", s)
			}
			b.WriteString(p)
		})
		if b.String() != s {
			t.Fatalf("pieces of %q join to %q", s, b.String())
		}
	})
}

func TestQwen2SplitPieces(t *testing.T) {
	var got []string
	splitQwen2("Hello world's  12 ok!!\n\n  x", func(p string) { got = append(got, p) })
	if strings.Join(got, "|") != "Hello| world|'s| | |1|2| ok|!!\n\n| | x" {
		t.Fatalf("pieces %q", got)
	}
}
