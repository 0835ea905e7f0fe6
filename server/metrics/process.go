package metrics

import (
	"runtime"
	"time"
)

// RegisterProcess adds Go runtime and process series: goroutines, heap
// and total memory obtained from the OS, GC cycles, and the start time.
func (r *Registry) RegisterProcess() {
	start := float64(time.Now().Unix())
	r.Collect(func(emit func(name, help, typ string, labels, values []string, v float64)) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		emit("go_goroutines", "Goroutines that currently exist.", "gauge", nil, nil, float64(runtime.NumGoroutine()))
		emit("go_memstats_heap_alloc_bytes", "Heap bytes allocated and in use.", "gauge", nil, nil, float64(ms.HeapAlloc))
		emit("go_memstats_sys_bytes", "Bytes obtained from the OS.", "gauge", nil, nil, float64(ms.Sys))
		emit("go_gc_cycles_total", "Completed GC cycles.", "counter", nil, nil, float64(ms.NumGC))
		emit("process_start_time_seconds", "Start time of the process since the Unix epoch.", "gauge", nil, nil, start)
	})
}
