// Package events defines the live messages of the job flow: the JSON events
// that WebSocket clients receive (queued, started, progress, succeeded,
// failed, canceled, metrics), the binary preview frame, and the core-NATS
// subjects on which workers publish them and gateways relay them.
package events

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/server/jobs"
)

// Event types.
const (
	TypeQueued    = "queued"
	TypeStarted   = "started"
	TypeProgress  = "progress"
	TypeSucceeded = "succeeded"
	TypeFailed    = "failed"
	TypeCanceled  = "canceled"
	TypeMetrics   = "metrics"
)

// Image is a finished image as events and API responses show it.
type Image struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	Seed   uint64 `json:"seed"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
}

// Error is the reason of a failed job.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Event is one JSON message about a job.
type Event struct {
	Type string    `json:"type"`
	Job  string    `json:"job"`
	Time time.Time `json:"time"`
	// Position is the queue position (queued).
	Position *int `json:"position,omitempty"`
	// Worker and Attempt describe who runs the job (started).
	Worker  string `json:"worker,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
	// Step, Steps and ItPerSec report sampler progress (progress).
	Step     int     `json:"step,omitempty"`
	Steps    int     `json:"steps,omitempty"`
	ItPerSec float64 `json:"its,omitempty"`
	// Images are the results (succeeded).
	Images []Image `json:"images,omitempty"`
	// Duration is the run time in seconds (succeeded, failed, canceled).
	Duration float64 `json:"duration_s,omitempty"`
	// Adjustments are the changes adaptive quality made to the request
	// (queued).
	Adjustments []jobs.Adjustment `json:"adjustments,omitempty"`
	// Error says why (failed).
	Error *Error `json:"error,omitempty"`
	// Snapshot marks an event that reports the state at subscription time
	// rather than a change.
	Snapshot bool `json:"snapshot,omitempty"`
}

// Subjects of the live event flow. Tenant and job ids are subject-safe.
const (
	progressPrefix = "kiln.ev."
	previewPrefix  = "kiln.pv."
	cancelPrefix   = "kiln.cancel."
	// HeartbeatSubject carries worker heartbeats (JSON Heartbeat).
	HeartbeatSubject = "kiln.worker.heartbeat"
	// KickSubject tells idle workers that a job was enqueued.
	KickSubject = "kiln.kick"
	// DrainSubject carries drain requests (JSON Drain) to workers; the
	// worker named answers with its Heartbeat.
	DrainSubject = "kiln.worker.drain"
)

// ProgressSubject carries a job's progress events.
func ProgressSubject(tenant, job string) string { return progressPrefix + tenant + "." + job }

// ProgressWildcard matches every progress subject.
const ProgressWildcard = progressPrefix + "*.*"

// PreviewSubject carries a job's preview frames.
func PreviewSubject(tenant, job string) string { return previewPrefix + tenant + "." + job }

// PreviewWildcard matches every preview subject.
const PreviewWildcard = previewPrefix + "*.*"

// CancelSubject asks the worker running a job to stop it.
func CancelSubject(tenant, job string) string { return cancelPrefix + tenant + "." + job }

// CancelWildcard matches every cancel subject.
const CancelWildcard = cancelPrefix + "*.*"

// SplitSubject returns the tenant and job of a progress, preview or cancel
// subject.
func SplitSubject(subject string) (tenant, job string, ok bool) {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 || parts[0] != "kiln" {
		return "", "", false
	}
	return parts[2], parts[3], true
}

// GPU is one device's readings.
type GPU struct {
	Index        int     `json:"index"`
	Name         string  `json:"name"`
	MemoryUsed   int64   `json:"memory_used"`
	MemoryTotal  int64   `json:"memory_total"`
	Utilization  float64 `json:"utilization"` // 0..1
	TemperatureC float64 `json:"temperature_c"`
	PowerW       float64 `json:"power_w"`
}

// Heartbeat is what a worker announces every metrics interval.
type Heartbeat struct {
	Worker  string    `json:"worker"`
	Device  string    `json:"device"`
	Busy    bool      `json:"busy"`
	Job     string    `json:"job,omitempty"`
	Models  []string  `json:"models,omitempty"`
	GPUs    []GPU     `json:"gpus,omitempty"`
	Time    time.Time `json:"time"`
	Stopped bool      `json:"stopped,omitempty"`
	// Speed is the measured sampling speed per model, in megapixel-steps
	// per second (images × width × height × steps / 1e6 per second).
	Speed map[string]float64 `json:"speed,omitempty"`
	// Draining is set while the worker takes no new jobs.
	Draining bool `json:"draining,omitempty"`
	// Memory lists the models in the worker's device and host memory, with
	// their components and what they share.
	Memory []memory.ModelUsage `json:"memory,omitempty"`
	// Queued counts, by model, the jobs the worker holds and has not
	// finished (its window and running batch): the placement policy's
	// queue per GPU.
	Queued map[string]int `json:"queued,omitempty"`
}

// Drain asks one worker to stop taking jobs (Drain true; running jobs
// finish, held ones go back to the queue) or to take jobs again.
type Drain struct {
	Worker string `json:"worker"`
	Drain  bool   `json:"drain"`
}

// WorkerStatus is a worker as metrics events show it.
type WorkerStatus struct {
	ID     string   `json:"id"`
	Device string   `json:"device"`
	Busy   bool     `json:"busy"`
	Models []string `json:"models,omitempty"`
	// Speed is the measured sampling speed per model (megapixel-steps/s).
	Speed map[string]float64 `json:"speed,omitempty"`
	// Draining is set while an operator has drained the worker.
	Draining bool `json:"draining,omitempty"`
}

// Metrics is the periodic status event.
type Metrics struct {
	Type       string         `json:"type"` // "metrics"
	Time       time.Time      `json:"time"`
	QueueDepth int            `json:"queue_depth"`
	Running    int            `json:"running"`
	Workers    []WorkerStatus `json:"workers"`
	GPUs       []GPU          `json:"gpus"`
}

// PreviewMagic starts every preview frame.
const PreviewMagic = "KPV1"

// previewFixed is the header size before the job id.
const previewFixed = 16

// Preview is a decoded preview frame.
type Preview struct {
	Job           string
	Step, Steps   int
	Width, Height int
	Index         int
	JPEG          []byte
}

// EncodePreview builds a binary preview frame:
//
//	offset size field
//	0      4    magic "KPV1"
//	4      2    header length H in bytes, big-endian (the JPEG starts at H)
//	6      2    step (1-based)
//	8      2    steps
//	10     2    preview width in pixels
//	12     2    preview height in pixels
//	14     1    image index within the job
//	15     1    job id length L
//	16     L    job id (ASCII)
//	H      …    JPEG data
func EncodePreview(p Preview) ([]byte, error) {
	if len(p.Job) == 0 || len(p.Job) > 255 {
		return nil, errors.New("events: preview job id length must be 1..255")
	}
	for _, v := range []int{p.Step, p.Steps, p.Width, p.Height} {
		if v < 0 || v > 0xffff {
			return nil, fmt.Errorf("events: preview field %d out of range", v)
		}
	}
	if p.Index < 0 || p.Index > 255 {
		return nil, fmt.Errorf("events: preview index %d out of range", p.Index)
	}
	h := previewFixed + len(p.Job)
	buf := make([]byte, h+len(p.JPEG))
	copy(buf, PreviewMagic)
	binary.BigEndian.PutUint16(buf[4:], uint16(h))
	binary.BigEndian.PutUint16(buf[6:], uint16(p.Step))
	binary.BigEndian.PutUint16(buf[8:], uint16(p.Steps))
	binary.BigEndian.PutUint16(buf[10:], uint16(p.Width))
	binary.BigEndian.PutUint16(buf[12:], uint16(p.Height))
	buf[14] = byte(p.Index)
	buf[15] = byte(len(p.Job))
	copy(buf[16:], p.Job)
	copy(buf[h:], p.JPEG)
	return buf, nil
}

// DecodePreview parses a preview frame; the JPEG aliases data.
func DecodePreview(data []byte) (Preview, error) {
	if len(data) < previewFixed || string(data[:4]) != PreviewMagic {
		return Preview{}, errors.New("events: not a preview frame")
	}
	h := int(binary.BigEndian.Uint16(data[4:]))
	l := int(data[15])
	if h < previewFixed+l || h > len(data) || l == 0 {
		return Preview{}, errors.New("events: preview header length out of range")
	}
	return Preview{
		Step:   int(binary.BigEndian.Uint16(data[6:])),
		Steps:  int(binary.BigEndian.Uint16(data[8:])),
		Width:  int(binary.BigEndian.Uint16(data[10:])),
		Height: int(binary.BigEndian.Uint16(data[12:])),
		Index:  int(data[14]),
		Job:    string(data[16 : 16+l]),
		JPEG:   data[h:],
	}, nil
}
