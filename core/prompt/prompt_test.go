package prompt

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// mul multiplies weights in order in float64, as the parser does.
func mul(ws ...float64) float64 {
	r := 1.0
	for _, w := range ws {
		r *= w
	}
	return r
}

func TestParse(t *testing.T) {
	up := 1.1
	one := 1.0
	down := one / up
	seg := func(text string, w float64) Segment { return Segment{Text: text, Weight: w} }
	brk := Segment{Weight: 1, Break: true}
	cases := []struct {
		in   string
		want []Segment
	}{
		{"a red cat", []Segment{seg("a red cat", 1)}},
		{"", []Segment{seg("", 1)}},
		{"()", []Segment{seg("", 1)}},
		{"(cat)", []Segment{seg("cat", up)}},
		{"[cat]", []Segment{seg("cat", down)}},
		{"((cat))", []Segment{seg("cat", mul(up, up))}},
		{"[[cat]]", []Segment{seg("cat", mul(down, down))}},
		{"(cat:1.5)", []Segment{seg("cat", 1.5)}},
		{"(cat: 1.5 )", []Segment{seg("cat", 1.5)}},
		{"(cat:.5)", []Segment{seg("cat", 0.5)}},
		{"(cat:+2.)", []Segment{seg("cat", 2)}},
		{"(cat:-0.5)", []Segment{seg("cat", -0.5)}},
		{"(cat:0)", []Segment{seg("cat", 0)}},
		{"a (b:1.2) c", []Segment{seg("a ", 1), seg("b", 1.2), seg(" c", 1)}},
		{"((cat:1.5))", []Segment{seg("cat", mul(1.5, up))}},
		{"(a [b] c)", []Segment{seg("a ", up), seg("b", mul(down, up)), seg(" c", up)}},
		{"(a (b:2) c:0.5)", []Segment{seg("a ", 0.5), seg("b", mul(2, 0.5)), seg(" c", 0.5)}},
		// adjacent runs of equal weight join
		{"(a)(b)", []Segment{seg("ab", up)}},
		{"a()b", []Segment{seg("ab", 1)}},
		// escapes
		{`\(cat\)`, []Segment{seg("(cat)", 1)}},
		{`\[cat\]`, []Segment{seg("[cat]", 1)}},
		{`\\(cat)`, []Segment{seg(`\`, 1), seg("cat", up)}},
		{`(a\:1.2)`, []Segment{seg("a:1.2", up)}},
		{`(a\)b)`, []Segment{seg("a)b", up)}},
		{`a\b`, []Segment{seg(`a\b`, 1)}},
		{`tail\`, []Segment{seg(`tail\`, 1)}},
		// unbalanced brackets
		{"cat)", []Segment{seg("cat)", 1)}},
		{"cat]", []Segment{seg("cat]", 1)}},
		{"(cat", []Segment{seg("cat", up)}},
		{"[cat", []Segment{seg("cat", down)}},
		{"((cat)", []Segment{seg("cat", mul(up, up))}},
		{"a (b [c", []Segment{seg("a ", 1), seg("b ", up), seg("c", mul(down, up))}},
		{"(cat:1.2", []Segment{seg("cat:1.2", up)}},
		{"cat:1.2)", []Segment{seg("cat:1.2)", 1)}},
		{"[a:1.5)", []Segment{seg("a:1.5)", down)}},
		{"([a:1.5)]", []Segment{seg("a", mul(1.5, down))}},
		{"(a:1.2.3)", []Segment{seg("a:1.2.3", up)}},
		{"(a:.)", []Segment{seg("a:.", up)}},
		{"(a:1e5)", []Segment{seg("a:1e5", up)}},
		{"(a:x)", []Segment{seg("a:x", up)}},
		{"(masterpiece:1.2), best quality, 1girl, <lora:x:0.5>",
			[]Segment{seg("masterpiece", 1.2), seg(", best quality, 1girl, <lora:x:0.5>", 1)}},
		// BREAK
		{"a BREAK b", []Segment{seg("a", 1), brk, seg("b", 1)}},
		{"a BREAK", []Segment{seg("a", 1), brk, seg("", 1)}},
		{"aBREAK b", []Segment{seg("aBREAK b", 1)}},
		{"a BREAKfast", []Segment{seg("a BREAKfast", 1)}},
		{"a break b", []Segment{seg("a break b", 1)}},
		{"a, BREAK, b", []Segment{seg("a,", 1), brk, seg(", b", 1)}},
		{"(a BREAK b)", []Segment{seg("a", up), brk, seg("b", up)}},
		{"x BREAK BREAK y", []Segment{seg("x", 1), brk, seg("", 1), brk, seg("y", 1)}},
	}
	for _, c := range cases {
		got := Parse(c.in)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("Parse(%q)\n got %+v\nwant %+v", c.in, got, c.want)
		}
	}
}

func TestHugeWeight(t *testing.T) {
	got := Parse("(a:" + strings.Repeat("9", 400) + ")")
	if len(got) != 1 || !math.IsInf(got[0].Weight, 1) {
		t.Fatalf("got %+v, want +Inf weight (the caller rejects it)", got)
	}
}

func TestLiteral(t *testing.T) {
	if got := Literal("(a:1.2)"); !reflect.DeepEqual(got, []Segment{{Text: "(a:1.2)", Weight: 1}}) {
		t.Fatal(got)
	}
}

// FuzzParse checks that any input parses without panicking into joined,
// well-formed segments.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "(a:1.2)", "[[b]", `\(x\)`, "a BREAK b", "((x:1.", ")(", "(a:+.)", "\xff(\xfe)", "(a:" + strings.Repeat("9", 400) + ")"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		segs := Parse(s)
		if len(segs) == 0 {
			t.Fatal("no segments")
		}
		total := 0
		for i, sg := range segs {
			if sg.Break && (sg.Text != "" || sg.Weight != 1) {
				t.Fatalf("break segment %+v", sg)
			}
			if i > 0 && !sg.Break && !segs[i-1].Break && sg.Weight == segs[i-1].Weight {
				t.Fatalf("adjacent segments of equal weight were not joined: %+v", segs)
			}
			total += len(sg.Text)
		}
		if total > len(s) {
			t.Fatalf("parse has more text (%d bytes) than the input (%d)", total, len(s))
		}
		if utf8.ValidString(s) {
			for _, sg := range segs {
				if !utf8.ValidString(sg.Text) {
					t.Fatalf("valid input gave invalid UTF-8 segment %q", sg.Text)
				}
			}
		}
		// Without syntax characters the text passes through whole.
		if !strings.ContainsAny(s, `\()[]:`) && !strings.Contains(s, breakWord) {
			if len(segs) != 1 || segs[0].Text != s || segs[0].Weight != 1 {
				t.Fatalf("plain %q parsed as %+v", s, segs)
			}
		}
	})
}
