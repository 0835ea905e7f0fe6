//go:build !unix

package modeltest

import "time"

// PeakRSS returns 0: peak memory is measured on Unix systems only.
func PeakRSS() float64 { return 0 }

// CPUTime returns 0: CPU time is measured on Unix systems only.
func CPUTime() time.Duration { return 0 }
