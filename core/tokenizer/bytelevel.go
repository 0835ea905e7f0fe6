package tokenizer

// byteLevelAlphabet returns the byte-to-character table of byte-level BPE
// (the GPT-2 scheme CLIP uses): printable Latin-1 bytes stand for
// themselves and every other byte is moved to an unused code point from
// U+0100 upward, so that any byte string becomes a string of visible
// characters with a vocabulary entry each.
func byteLevelAlphabet() [256]rune {
	var table [256]rune
	printable := func(b int) bool {
		return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
	}
	next := rune(256)
	for b := 0; b < 256; b++ {
		if printable(b) {
			table[b] = rune(b)
		} else {
			table[b] = next
			next++
		}
	}
	return table
}
