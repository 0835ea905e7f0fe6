package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// normalize applies CLIP's text normaliser as the Hugging Face tokenizers
// pipeline of CLIPTokenizer defines it: Unicode NFC, every run of white
// space replaced by one space, then full lower-casing per character.
func normalize(s string) string {
	s = norm.NFC.String(s)
	var b strings.Builder
	b.Grow(len(s))
	inSpace := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			if !inSpace {
				b.WriteByte(' ')
			}
			inSpace = true
			continue
		}
		inSpace = false
		if r == 'İ' {
			// The one unconditional multi-character lower-case mapping
			// (SpecialCasing.txt): capital I with dot above → i + U+0307.
			b.WriteString("i\u0307")
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// Word boundaries of CLIP's pre-tokeniser, in the order its regular
// expression tries them:
//
//	<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//
// White space between matches is dropped.
var contractions = [...]string{"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"}

// specialPatterns are the special-token spellings the word expression
// keeps whole. The byte-level step that follows splits them again with the
// GPT-2 expression into "<|", the name, and "|>".
var specialPatterns = [...]string{"<|startoftext|>", "<|endoftext|>"}

// splitWords cuts normalised text into the pieces that BPE encodes one by
// one, calling emit for each in order.
func splitWords(s string, emit func(piece string)) {
	i := 0
scan:
	for i < len(s) {
		for _, p := range specialPatterns {
			if strings.HasPrefix(s[i:], p) {
				emit(p[:2])
				emit(p[2 : len(p)-2])
				emit(p[len(p)-2:])
				i += len(p)
				continue scan
			}
		}
		if s[i] == '\'' {
			for _, c := range contractions {
				if strings.HasPrefix(s[i:], c) {
					emit(c)
					i += len(c)
					continue scan
				}
			}
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case unicode.IsSpace(r):
			i += size
		case unicode.IsLetter(r):
			j := i + size
			for j < len(s) {
				r, n := utf8.DecodeRuneInString(s[j:])
				if !unicode.IsLetter(r) {
					break
				}
				j += n
			}
			emit(s[i:j])
			i = j
		case unicode.IsNumber(r):
			emit(s[i : i+size])
			i += size
		default:
			j := i + size
			for j < len(s) {
				r, n := utf8.DecodeRuneInString(s[j:])
				if unicode.IsSpace(r) || unicode.IsLetter(r) || unicode.IsNumber(r) {
					break
				}
				j += n
			}
			emit(s[i:j])
			i = j
		}
	}
}
