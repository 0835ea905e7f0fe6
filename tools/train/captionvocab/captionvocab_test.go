package captionvocab

import "testing"

func TestBuildMakesEveryWordOneToken(t *testing.T) {
	words := map[string]int{"red": 10, "green": 7, "background": 20, "a": 30, "an": 5, "on": 25, "triangle": 3}
	v, err := Build(words)
	if err != nil {
		t.Fatal(err)
	}
	for w := range words {
		if _, ok := v.Tokens[w+"</w>"]; !ok {
			t.Errorf("word %q is not a single token", w)
		}
	}
	if len(v.Tokens) != 512+len(v.Merges)+2-countDup(v) {
		t.Errorf("vocab size %d, merges %d", len(v.Tokens), len(v.Merges))
	}
	if v.Tokens[EndOfText] != len(v.Tokens)-1 || v.Tokens[StartOfText] != len(v.Tokens)-2 {
		t.Error("special tokens are not last")
	}
	if _, err := Build(map[string]int{"Red": 1}); err == nil {
		t.Error("upper case accepted")
	}
}

// countDup counts merges whose result was already in the vocabulary.
func countDup(v *Vocabulary) int {
	seen := map[string]bool{}
	d := 0
	for _, m := range v.Merges {
		if seen[m[0]+m[1]] {
			d++
		}
		seen[m[0]+m[1]] = true
	}
	return d
}
