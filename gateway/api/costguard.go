package api

import (
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/validate"
	"github.com/kiln-project/kiln/server/cost"
	"github.com/kiln-project/kiln/server/jobs"
)

// CodeTooCostly refuses a job the server's hardware cannot finish in time.
const CodeTooCostly = "too_costly"

// gib is the model size the configured CPU speed prior is given for.
const gib = 1 << 30

// cpuSpeed returns the sampling speed (megapixel-steps per second) the
// fastest live worker reaches on a model when every live worker is a CPU
// worker; 0 when a GPU worker is live or nothing is known. A model a
// worker has not run yet gets an estimate from what it has run, scaled by
// model size, or from the configured prior.
func (s *Server) cpuSpeed(model string) float64 {
	bytesOf := func(name string) float64 {
		if m, ok := s.o.Models.Get(name); ok && m.Bytes > 0 {
			return float64(m.Bytes)
		}
		return 0
	}
	best := 0.0
	for _, hb := range s.liveWorkers() {
		if hb.Device != "cpu" {
			return 0
		}
		sp := hb.Speed[model]
		if sp <= 0 {
			if want := bytesOf(model); want > 0 {
				for other, v := range hb.Speed {
					if b := bytesOf(other); b > 0 {
						sp = max(sp, v*b/want)
					}
				}
				if sp <= 0 {
					sp = s.cfg.CPUSpeedPrior * gib / want
				}
			}
		}
		best = max(best, sp)
	}
	return best
}

// costGuard refuses (422) a job that the CPU workers would need longer
// than max_cpu_job_time for, with the estimate and a smaller request that
// fits.
func (s *Server) costGuard(p jobs.Params) *apierr.Error {
	limit := s.cfg.MaxCPUJobTime.D()
	if limit <= 0 {
		return nil
	}
	speed := s.cpuSpeed(p.Model)
	work := cost.Work(&p)
	est := cost.Seconds(work, speed)
	if speed <= 0 || est <= limit.Seconds() {
		return nil
	}
	details := map[string]any{"estimate_s": round3(est), "limit_s": limit.Seconds(), "device": "cpu",
		"work_megapixel_steps": round3(work), "speed_megapixel_steps_per_s": round3(speed)}
	msg := fmt.Sprintf("this request would take about %s on this server's CPU workers (%.3g megapixel-steps at %.3g per second); the limit max_cpu_job_time is %s",
		time.Duration(est*float64(time.Second)).Round(time.Second), work, speed, limit)
	if sug, ok := cost.Suggest(p, speed, limit, validate.MinSide); ok {
		details["suggestion"] = sug
		msg += fmt.Sprintf("; try width=%d height=%d steps=%d n=%d (about %.0fs)", sug.Width, sug.Height, sug.Steps, sug.N, sug.EstimateS)
	}
	e := apierr.New(http.StatusUnprocessableEntity, CodeTooCostly, "", "%s", msg)
	e.Details = details
	return e
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
