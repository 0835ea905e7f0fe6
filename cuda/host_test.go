package cuda

import (
	"context"
	"testing"
	"time"

	"github.com/kiln-project/kiln/core/model/modeltest"
	"github.com/kiln-project/kiln/core/model/unet"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda/internal/cublas"
	"github.com/kiln-project/kiln/cuda/internal/cudnn"
)

// nullEngine accepts all work and does none: it measures the backend's own
// host cost (recording, planning, graph lookup) per model call.
type nullEngine struct {
	next     uint64
	launches int
}

func (e *nullEngine) alloc(n int64) (uint64, error) {
	p := e.next + 1<<32
	e.next += uint64(n+4095) &^ 4095
	return p, nil
}
func (e *nullEngine) free(uint64)                                       {}
func (e *nullEngine) upload(uint64, []byte) error                       { return nil }
func (e *nullEngine) download(dst []byte, _ uint64) error               { clear(dst); return nil }
func (e *nullEngine) memset(uint64, int64, byte) error                  { return nil }
func (e *nullEngine) launch(string, launchCfg, []karg) error            { e.launches++; return nil }
func (e *nullEngine) gemm(*cublas.Gemm) error                           { e.launches++; return nil }
func (e *nullEngine) beginCapture() error                               { return nil }
func (e *nullEngine) endCapture() (graphHandle, int, error)             { return 1, 0, nil }
func (e *nullEngine) launchGraph(graphHandle) error                     { return nil }
func (e *nullEngine) destroyGraph(graphHandle)                          {}
func (e *nullEngine) sync() error                                       { return nil }
func (e *nullEngine) memInfo() (int64, int64, error)                    { return 1 << 40, 1 << 40, nil }
func (e *nullEngine) newEvent() (eventHandle, error)                    { return 1, nil }
func (e *nullEngine) record(eventHandle) error                          { return nil }
func (e *nullEngine) elapsed(eventHandle, eventHandle) (float32, error) { return 0, nil }
func (e *nullEngine) close()                                            {}

// BenchmarkHostOverheadSD15Step measures the host time of one SD 1.5 UNet
// step with CFG at batch 1 when the device is infinitely fast: model code,
// recording, and the graph-replay flush.
func BenchmarkHostOverheadSD15Step(b *testing.B) {
	cfg, err := unet.ParseConfig(modeltest.SD15UNetConfig())
	if err != nil {
		b.Fatal(err)
	}
	infos, err := unet.ExpectedTensors(cfg)
	if err != nil {
		b.Fatal(err)
	}
	src, err := modeltest.NewRandom(infos, 1, "F16")
	if err != nil {
		b.Fatal(err)
	}
	eng := &nullEngine{}
	d := newDevice(Info{Name: "null", SMs: 132}, DefaultOptions(), eng, nil)
	be := d.Backend(tensor.F16)
	m, err := unet.New(be, cfg, src)
	if err != nil {
		b.Fatal(err)
	}
	x := make([]float32, 2*4*64*64)
	cond := make([]float32, 2*77*768)
	step := func() {
		if _, err := m.Forward(context.Background(), x, [4]int{2, 4, 64, 64}, []float32{500}, cond, 77); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		step()
	}
	b.ResetTimer()
	d.stats.HostFlushTime = 0
	l0 := eng.launches
	start := time.Now()
	for i := 0; i < b.N; i++ {
		step()
	}
	el := time.Since(start)
	b.ReportMetric(float64(d.stats.HostFlushTime.Microseconds())/float64(b.N), "flush-µs/op")
	b.ReportMetric(float64(el.Microseconds())/float64(b.N), "total-µs/op")
	b.ReportMetric(float64(eng.launches-l0)/float64(b.N), "launches/op")
	b.Logf("stats %+v", d.Stats())
}

func (e *nullEngine) destroyEvent(eventHandle) {}
func (e *nullEngine) hasCuDNN() bool           { return false }
func (e *nullEngine) hasKernel(string) bool    { return true }
func (e *nullEngine) cudnnFind(cudnn.ConvShape, uint64, uint64, uint64) ([]cudnn.AlgoPerf, error) {
	return nil, nil
}
func (e *nullEngine) cudnnConv(*cudnnCall) error { e.launches++; return nil }
func (e *nullEngine) hasLt() bool                { return false }
func (e *nullEngine) ltMatmul(*ltCall) error     { e.launches++; return nil }
