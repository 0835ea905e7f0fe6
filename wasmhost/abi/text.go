package abi

import "strconv"

// Small formatting helpers: the package avoids fmt so that guests that
// import it stay small.

func itoa(v int64) string   { return strconv.FormatInt(v, 10) }
func utoa(v uint64) string  { return strconv.FormatUint(v, 10) }
func ftoa(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
func quote(s string) string { return strconv.Quote(s) }

func dims(w, h uint32) string { return utoa(uint64(w)) + "×" + utoa(uint64(h)) }
