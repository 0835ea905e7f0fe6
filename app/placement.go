package app

import (
	"time"

	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/worker"
	"github.com/kiln-project/kiln/worker/placement"
)

// startPlacement starts the placement of jobs across GPUs when the
// configuration asks for it: a board fed by every worker's heartbeats (of
// this process and others on the same NATS) and the policy with its
// defaults. Nil when placement is off (any worker takes any job).
func (in *Instance) startPlacement() (worker.Placement, error) {
	if !in.cfg.Placement {
		return nil, nil
	}
	board := placement.NewBoard(3*in.cfg.MetricsInterval.D() + placementSlack)
	stop, err := board.Listen(in.broker.Conn)
	if err != nil {
		return nil, err
	}
	in.placementStop = stop
	pol := placement.New(placement.Config{})
	c := pol.Config()
	in.log.Info("placement across GPUs on", "replicate_at", c.ReplicateAt, "max_defer", c.MaxDefer.String())
	return placement.NewPlacer(pol, board, nil), nil
}

// ownGPU narrows the NVML readings a worker's heartbeats carry to its own
// GPU (cuda:N reads index N), so /v1/status lists each GPU once, by the
// worker that runs on it; CPU workers carry none.
func ownGPU(read func() []events.GPU, dev Device) func() []events.GPU {
	if !dev.GPU() {
		return func() []events.GPU { return nil }
	}
	n := ordinal(dev.Name)
	return func() []events.GPU {
		for _, g := range read() {
			if g.Index == n {
				return []events.GPU{g}
			}
		}
		return nil
	}
}

// placementSlack is added to three heartbeat intervals before the board
// forgets a silent worker.
const placementSlack = time.Second
