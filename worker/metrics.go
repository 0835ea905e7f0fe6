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
	// Stage times each stage of a served job, by stage: queue_wait,
	// claim, prepare (request, init image, text encoding and initial
	// noise as the job joins a batch), step (one batch step, once per
	// step), decode (VAE, once per step that finished jobs), post
	// (post-processing nodes), png (encoding), store (object store
	// writes), settle (final record update and acknowledgement).
	Stage *metrics.HistogramVec
	// GenerateSeconds accumulates the wall time the device spends on
	// running batches (its rate is the busy fraction).
	GenerateSeconds *metrics.Counter
	// PreviewsDropped counts previews skipped because every preview
	// encoder was busy.
	PreviewsDropped *metrics.Counter
	// IdleWork accumulates the time engines spent on between-jobs work
	// (model warm-up, kernel tuning off the request path).
	IdleWork *metrics.Counter
	// Joins counts jobs that joined a batch already running.
	Joins *metrics.Counter
	// PlacementDeferred counts jobs a worker handed back for a GPU that
	// holds their model (Options.Placement).
	PlacementDeferred *metrics.Counter
}

// Stages of a served job, the label values of Metrics.Stage.
const (
	StageQueueWait = "queue_wait"
	StageClaim     = "claim"
	StagePrepare   = "prepare"
	StageStep      = "step"
	StageDecode    = "decode"
	StagePost      = "post"
	StagePNG       = "png"
	StageStore     = "store"
	StageSettle    = "settle"
)

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
		Stage: reg.NewHistogramVec("kiln_stage_seconds", "Duration of each stage of a served job (see docs/api.md).",
			metrics.ExponentialBuckets(0.0001, 2, 20), "stage"),
		GenerateSeconds: reg.NewCounter("kiln_worker_generate_seconds_total", "Wall time workers spent running batches on their devices."),
		PreviewsDropped: reg.NewCounter("kiln_preview_frames_dropped_total", "Previews skipped because every preview encoder was busy."),
		IdleWork:        reg.NewCounter("kiln_worker_idle_work_seconds_total", "Time engines spent warming models up and tuning kernels between jobs."),
		Joins:           reg.NewCounter("kiln_batch_joins_total", "Jobs that joined a batch already running, at a step boundary."),
		PlacementDeferred: reg.NewCounter("kiln_placement_deferred_total",
			"Jobs a worker handed back for a GPU that holds their model (placement)."),
	}
}
