package memory

// NoteRecovery counts what a Split did, for the metrics.
func (m *Manager) NoteRecovery(r Report) {
	m.mu.Lock()
	m.stats.oomSplits += int64(r.Splits)
	if r.Recovered() {
		m.stats.oomRetries++
	}
	m.mu.Unlock()
}

// NoteFailure counts a job failed for memory after every recovery step.
func (m *Manager) NoteFailure() {
	m.mu.Lock()
	m.stats.oomFailures++
	m.mu.Unlock()
}

// Collect emits the manager's gauges and counters; its signature is the
// metrics registry's Collect hook. Names: kiln_gpu_memory_* for the
// device allocator (budget, allocated, reserved, peak, weights, free) and
// kiln_memory_* for tiers, sharing and out-of-memory recovery.
func (m *Manager) Collect(emit func(name, help, typ string, labels []string, values []string, v float64)) {
	dev := []string{"device"}
	val := []string{m.cfg.Name}
	var st DeviceStats
	if m.cfg.Device != nil {
		st = m.cfg.Device.MemStats()
	}
	m.mu.Lock()
	free := m.freeLocked()
	tiers := map[Tier][2]int64{}
	for _, t := range []Tier{GPU, Host} {
		tiers[t] = [2]int64{m.ledger.tierBytes(t), m.ledger.savedBytes(t)}
	}
	running, reserved := m.running, m.reserved
	c := m.stats
	m.mu.Unlock()

	g := func(name, help string, v int64) { emit(name, help, "gauge", dev, val, float64(v)) }
	g("kiln_gpu_memory_budget_bytes", "Device memory Kiln may use.", m.cfg.Budget)
	g("kiln_gpu_memory_free_bytes", "Budget minus resident weights minus running batches' reserved activations.", free)
	g("kiln_gpu_memory_activation_reserved_bytes", "Activation bytes booked by running batches.", reserved)
	g("kiln_gpu_memory_running_batches", "Batches holding an activation reservation.", int64(running))
	if m.cfg.Device != nil {
		g("kiln_gpu_memory_allocated_bytes", "Device bytes handed out by Kiln's caching allocator (NVML's kiln_gpu_memory_used_bytes includes other processes).", st.Used)
		g("kiln_gpu_memory_reserved_bytes", "Device bytes the caching allocator holds (used plus cached).", st.Reserved)
		g("kiln_gpu_memory_peak_bytes", "High-water mark of used bytes since the last batch began.", st.Peak)
		g("kiln_gpu_memory_weights_bytes", "Device bytes of uploaded weights.", st.Weights)
	}
	for _, t := range []Tier{GPU, Host} {
		tv := []string{m.cfg.Name, t.String()}
		tl := []string{"device", "tier"}
		emit("kiln_memory_tier_bytes", "Model weights held per tier, shared components once.", "gauge", tl, tv, float64(tiers[t][0]))
		emit("kiln_memory_shared_saved_bytes", "Bytes per tier that sharing components by content hash saves.", "gauge", tl, tv, float64(tiers[t][1]))
	}
	g("kiln_memory_host_budget_bytes", "Pinned host memory offloaded models may hold.", m.cfg.HostBudget)
	emit("kiln_memory_oom_splits_total", "Batch halvings after out-of-memory failures.", "counter", dev, val, float64(c.oomSplits))
	emit("kiln_memory_oom_recovered_total", "Batches that completed after out-of-memory recovery.", "counter", dev, val, float64(c.oomRetries))
	emit("kiln_memory_oom_failures_total", "Jobs failed for memory after every recovery step.", "counter", dev, val, float64(c.oomFailures))
	emit("kiln_gpu_memory_trims_total", "Idle trims of the allocator's cached memory.", "counter", dev, val, float64(c.trims))
}
