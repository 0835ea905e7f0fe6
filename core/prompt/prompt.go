// Package prompt parses the emphasis syntax of AUTOMATIC1111 and ComfyUI
// prompts into runs of text with weights:
//
//	(word)        weight × 1.1
//	[word]        weight ÷ 1.1
//	(word:1.3)    weight × 1.3
//	((word))      nesting multiplies: × 1.21
//	\( \) \[ \] \: \\   the literal character
//	BREAK         (upper case, a word on its own) ends the current 75-token chunk
//
// Brackets that never close apply their ×1.1 or ÷1.1 up to the end of the
// prompt; a closing bracket with nothing open, and a ":number)" with no
// round bracket open, are plain text. The rules follow AUTOMATIC1111's
// parse_prompt_attention, with three deliberate differences: a backslash
// before any other character is kept instead of dropped, "\:" is a literal
// colon that never starts a weight, and a weight that is not a number (such
// as "1.2.3") leaves the colon as text where the original raises an
// exception. Parse never fails: every input has a parse.
package prompt

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Segment is a run of prompt text with the weight its tokens get.
type Segment struct {
	Text   string
	Weight float64
	// Break marks the BREAK keyword: the encoder pads the current chunk and
	// starts a new one. Text is empty and Weight is 1 on a break.
	Break bool
}

// breakWord is the keyword that forces a new chunk.
const breakWord = "BREAK"

// Parse splits text into weighted segments. Adjacent segments of equal
// weight are joined; an empty prompt gives one empty segment of weight 1.
func Parse(text string) []Segment {
	one, eleven := 1.0, 1.1
	roundMul, squareMul := eleven, one/eleven

	var res []Segment
	var round, square []int
	multiply := func(from int, w float64) {
		for i := from; i < len(res); i++ {
			if !res[i].Break {
				res[i].Weight *= w
			}
		}
	}
	addText := func(s string) { res = appendText(res, s) }
	pop := func(stack *[]int) int {
		s := *stack
		p := s[len(s)-1]
		*stack = s[:len(s)-1]
		return p
	}

	for i := 0; i < len(text); {
		switch c := text[i]; c {
		case '\\':
			if i+1 < len(text) && strings.IndexByte(`()[]\:`, text[i+1]) >= 0 {
				res = append(res, Segment{Text: text[i+1 : i+2], Weight: 1})
				i += 2
			} else {
				res = append(res, Segment{Text: `\`, Weight: 1})
				i++
			}
		case '(':
			round = append(round, len(res))
			i++
		case '[':
			square = append(square, len(res))
			i++
		case ':':
			n, w, ok := matchWeight(text[i:])
			switch {
			case ok && len(round) > 0:
				multiply(pop(&round), w)
				i += n
			case ok:
				addText(text[i : i+n])
				i += n
			default:
				addText(":")
				i++
			}
		case ')':
			if len(round) > 0 {
				multiply(pop(&round), roundMul)
			} else {
				addText(")")
			}
			i++
		case ']':
			if len(square) > 0 {
				multiply(pop(&square), squareMul)
			} else {
				addText("]")
			}
			i++
		default:
			j := i + 1
			for j < len(text) && strings.IndexByte(`\()[]:`, text[j]) < 0 {
				j++
			}
			addText(text[i:j])
			i = j
		}
	}
	for _, p := range round {
		multiply(p, roundMul)
	}
	for _, p := range square {
		multiply(p, squareMul)
	}
	if len(res) == 0 {
		return []Segment{{Text: "", Weight: 1}}
	}
	out := res[:1]
	for _, s := range res[1:] {
		last := &out[len(out)-1]
		if !s.Break && !last.Break && s.Weight == last.Weight {
			last.Text += s.Text
			continue
		}
		out = append(out, s)
	}
	return out
}

// appendText adds a run of plain text, cutting it at every BREAK keyword
// (with the white space around it) into text and break segments.
func appendText(res []Segment, s string) []Segment {
	for {
		start, end := findBreak(s)
		if start < 0 {
			return append(res, Segment{Text: s, Weight: 1})
		}
		res = append(res, Segment{Text: s[:start], Weight: 1}, Segment{Weight: 1, Break: true})
		s = s[end:]
	}
}

// findBreak locates the first BREAK that stands as a word of its own and
// returns the span it occupies together with the white space on both
// sides, or -1.
func findBreak(s string) (int, int) {
	for off := 0; ; {
		k := strings.Index(s[off:], breakWord)
		if k < 0 {
			return -1, -1
		}
		k += off
		e := k + len(breakWord)
		before, _ := utf8.DecodeLastRuneInString(s[:k])
		after, _ := utf8.DecodeRuneInString(s[e:])
		if (k == 0 || !isWordRune(before)) && (e == len(s) || !isWordRune(after)) {
			start := k
			for start > 0 {
				r, n := utf8.DecodeLastRuneInString(s[:start])
				if !unicode.IsSpace(r) {
					break
				}
				start -= n
			}
			for e < len(s) {
				r, n := utf8.DecodeRuneInString(s[e:])
				if !unicode.IsSpace(r) {
					break
				}
				e += n
			}
			return start, e
		}
		off = k + 1
	}
}

// isWordRune reports whether r is a word character for the \b of the
// BREAK expression (letters, numbers, underscore).
func isWordRune(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r)
}

// matchWeight matches `:\s*[+-]?[.0-9]+\s*\)` at the start of s and parses
// the number. It reports the length matched; ok is false when the pattern
// does not match or the number is not a valid decimal.
func matchWeight(s string) (n int, w float64, ok bool) {
	i := 1 // the colon
	i = skipSpace(s, i)
	numStart := i
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := i
	for i < len(s) && (s[i] == '.' || (s[i] >= '0' && s[i] <= '9')) {
		i++
	}
	if i == digits {
		return 0, 0, false
	}
	num := s[numStart:i]
	i = skipSpace(s, i)
	if i >= len(s) || s[i] != ')' {
		return 0, 0, false
	}
	if strings.Count(num, ".") > 1 || strings.Trim(num[digits-numStart:], ".") == "" {
		return 0, 0, false
	}
	w, err := strconv.ParseFloat(num, 64)
	if err != nil && !isRangeErr(err) {
		return 0, 0, false
	}
	return i + 1, w, true
}

func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

func skipSpace(s string, i int) int {
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsSpace(r) {
			break
		}
		i += n
	}
	return i
}

// Literal returns the whole text as one segment of weight 1: the prompt
// as the tokenizer sees it when emphasis is off.
func Literal(text string) []Segment { return []Segment{{Text: text, Weight: 1}} }
