package gpu

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// SystemMemory returns the machine's total RAM in bytes from
// /proc/meminfo, or 0 where that is unavailable.
func SystemMemory() int64 {
	total, _ := MemInfo()
	return total
}

// MemInfo returns the machine's total and available RAM in bytes from
// /proc/meminfo (MemTotal, MemAvailable), or zeros where unavailable.
func MemInfo() (total, available int64) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "MemTotal:":
			total = kb * 1024
		case "MemAvailable:":
			available = kb * 1024
		}
	}
	return total, available
}
