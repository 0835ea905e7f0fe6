package worker

import (
	"github.com/kiln-project/kiln/server/metrics"
)

// Metrics are the worker-side series; create them once per process and
// share them between its workers.
type Metrics struct {
	JobsFinished  *metrics.CounterVec
	JobDuration   *metrics.Histogram
	QueueWait     *metrics.Histogram
	StepDuration  *metrics.Histogram
	Images        *metrics.Counter
	ModelLoad     *metrics.Histogram
	Redeliveries  *metrics.Counter
	HandedBack    *metrics.Counter
	Busy          *metrics.GaugeVec
	PreviewFrames *metrics.Counter
	BatchImages   *metrics.Histogram
}

// NewMetrics registers the worker series on reg.
func NewMetrics(reg *metrics.Registry) *Metrics {
	secs := metrics.ExponentialBuckets(0.01, 2, 16) // 10 ms .. ~5.5 min
	return &Metrics{
		JobsFinished: reg.NewCounterVec("kiln_jobs_finished_total", "Jobs finished by workers, by final status.", "status"),
		JobDuration:  reg.NewHistogram("kiln_job_duration_seconds", "Time from start to finish of a job on a worker.", secs),
		QueueWait:    reg.NewHistogram("kiln_queue_wait_seconds", "Time jobs waited in the queue before a worker started them.", secs),
		StepDuration: reg.NewHistogram("kiln_step_duration_seconds", "Duration of one sampler step.",
			metrics.ExponentialBuckets(0.001, 2, 16)),
		Images:        reg.NewCounter("kiln_images_generated_total", "Images generated (rate() gives images per second)."),
		ModelLoad:     reg.NewHistogram("kiln_model_load_seconds", "Model load time on a cache miss.", secs),
		Redeliveries:  reg.NewCounter("kiln_job_redeliveries_total", "Jobs delivered again after a worker died or stalled."),
		HandedBack:    reg.NewCounter("kiln_jobs_handed_back_total", "Running jobs handed back to the queue at shutdown."),
		Busy:          reg.NewGaugeVec("kiln_worker_busy", "1 while the worker generates a batch.", "worker"),
		PreviewFrames: reg.NewCounter("kiln_preview_frames_total", "Latent preview frames published."),
		BatchImages: reg.NewHistogram("kiln_batch_images", "Images the worker generated together in one batch.",
			metrics.ExponentialBuckets(1, 2, 8)),
	}
}
