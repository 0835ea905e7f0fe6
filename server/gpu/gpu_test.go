package gpu

import (
	"runtime"
	"testing"
)

func TestMonitorWithoutGPUIsNotAnError(t *testing.T) {
	m := Open()
	defer m.Close()
	gpus := m.Read()
	if !m.Available() && gpus != nil {
		t.Fatalf("readings without NVML: %v", gpus)
	}
	for _, g := range gpus {
		if g.MemoryTotal <= 0 || g.Name == "" {
			t.Fatalf("implausible reading %+v", g)
		}
	}
	var nilMon *Monitor
	if nilMon.Read() != nil || nilMon.Available() {
		t.Fatal("nil monitor reports GPUs")
	}
}

func TestSystemMemory(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/meminfo")
	}
	if m := SystemMemory(); m < 64<<20 {
		t.Fatalf("SystemMemory = %d", m)
	}
}
