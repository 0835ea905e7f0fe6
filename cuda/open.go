package cuda

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda/internal/cu"
	"github.com/kiln-project/kiln/cuda/internal/kernels"
)

// ErrNoGPU wraps every reason why no CUDA device can be used.
var ErrNoGPU = errors.New("no GPU")

// Open opens CUDA device ordinal: it loads the driver and cuBLAS, creates a
// stream, loads Kiln's kernels and starts the device's worker thread. The
// error wraps ErrNoGPU and says why when no usable device is there.
func Open(ordinal int, opts Options) (*Device, error) {
	drv, err := loadDriver()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoGPU, err)
	}
	n, err := drv.DeviceCount()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoGPU, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: the CUDA driver sees no device", ErrNoGPU)
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("%w: device cuda:%d does not exist (%d device(s))", ErrNoGPU, ordinal, n)
	}
	blas, err := loadCuBLAS()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoGPU, err)
	}
	w := newWorker()
	var eng *cudaEngine
	info := Info{Ordinal: ordinal, Driver: drv.Version(), DriverPath: drv.LibraryPath(), CuBLAS: blas.Path, CuBLASMajor: blas.Major}
	err = w.do(func() error {
		e, err := newCUDAEngine(drv, blas, ordinal)
		if err != nil {
			return err
		}
		eng = e
		return deviceInfo(drv, e.dev, &info)
	})
	if err != nil {
		if eng != nil {
			_ = w.do(func() error { eng.close(); return nil })
		}
		w.stop()
		return nil, fmt.Errorf("%w: cuda:%d: %v", ErrNoGPU, ordinal, err)
	}
	d := newDevice(info, opts, eng, w)
	d.tune = true
	d.sm90a = loadSM90A(d, eng, opts)
	return d, nil
}

// loadSM90A loads the optional Hopper image (kernels.SM90A, or the file
// Options.SM90AImage names) on sm_90 devices and says what happened, for
// kiln doctor. A driver that refuses it (images from nvcc 13 need r580)
// leaves the portable kernels alone in use.
func loadSM90A(d *Device, eng *cudaEngine, opts Options) string {
	if d.info.Major != 9 || d.info.Minor != 0 {
		return fmt.Sprintf("not used on sm_%d%d", d.info.Major, d.info.Minor)
	}
	if !opts.SM90A {
		return "off (KILN_CUDA_SM90A=0)"
	}
	img, from := kernels.SM90A(), "built-in"
	if opts.SM90AImage != "" {
		b, err := os.ReadFile(opts.SM90AImage)
		if err != nil {
			return fmt.Sprintf("not loaded: %v", err)
		}
		img, from = b, opts.SM90AImage
	}
	if img == nil {
		return "none in this build"
	}
	if err := d.run(func() error { return eng.loadSM90A(img) }); err != nil {
		return fmt.Sprintf("not loaded (%s): %v", from, err)
	}
	return fmt.Sprintf("loaded (%s, %d bytes)", from, len(img))
}

func deviceInfo(drv *cu.Driver, dev cu.Device, info *Info) error {
	var err error
	if info.Name, err = drv.DeviceName(dev); err != nil {
		return err
	}
	if info.Memory, err = drv.TotalMem(dev); err != nil {
		return err
	}
	for _, a := range []struct {
		p    *int
		attr int
	}{
		{&info.Major, cu.AttrComputeCapabilityMajor}, {&info.Minor, cu.AttrComputeCapabilityMinor},
		{&info.SMs, cu.AttrMultiprocessorCount}, {&info.L2, cu.AttrL2CacheSize},
		{&info.MaxSharedOpt, cu.AttrMaxSharedMemPerBlockOptin},
	} {
		if *a.p, err = drv.DeviceAttribute(dev, a.attr); err != nil {
			return err
		}
	}
	return nil
}

// DeviceCount returns how many CUDA devices the driver sees, or an error
// wrapping ErrNoGPU that says why there are none.
func DeviceCount() (int, error) {
	drv, err := loadDriver()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrNoGPU, err)
	}
	n, err := drv.DeviceCount()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrNoGPU, err)
	}
	return n, nil
}

// cuPtr resolves a buffer reference to a device address.
func cuPtr(r bufRef) cu.DevicePtr { return cu.DevicePtr(r.buf.addr + uint64(r.off)) }

// uploadWeight allocates buf and fills it from raw (dtype src) as dtype dst,
// transposing 4-D filters to channels-last. It runs on the device thread.
func (d *Device) uploadWeight(buf *buffer, shape tensor.Shape, src, dst tensor.DType, lay layout, raw []byte) error {
	addr, class, err := d.alloc.alloc(buf.size)
	if err != nil {
		return err
	}
	buf.addr, buf.own, buf.ownSize = addr, true, class
	d.addWeights(buf.size)
	n := shape.Numel()
	if n == 0 {
		return nil
	}
	needT := lay == nhwc && shape[1] > 1 && shape[2]*shape[3] > 1
	if src == dst && !needT {
		return d.noteErr(d.eng.upload(addr, raw))
	}
	tmp, tclass, err := d.alloc.alloc(int64(len(raw)))
	if err != nil {
		return err
	}
	defer d.alloc.release(tmp, tclass)
	if err := d.eng.upload(tmp, raw); err != nil {
		return d.noteErr(err)
	}
	cur := tmp
	if src != dst {
		target := addr
		if needT {
			t2, c2, err := d.alloc.alloc(int64(n) * int64(dst.Size()))
			if err != nil {
				return err
			}
			defer d.alloc.release(t2, c2)
			target = t2
		}
		cfg := d.grid1(n)
		name := "convert" + suffix(src) + "_" + suffix(dst)[1:]
		if err := d.eng.launch(name, cfg, []karg{{target, 8}, {cur, 8}, {uint64(uint32(n)), 4}}); err != nil {
			return d.noteErr(err)
		}
		cur = target
	}
	if needT {
		rows, cols, batch := shape[1], shape[2]*shape[3], shape[0]
		cfg := launchCfg{grid: [3]uint32{uint32((cols + 31) / 32), uint32((rows + 31) / 32), uint32(batch)}, block: [3]uint32{32, 8, 1}}
		if err := d.eng.launch("transpose"+suffix(dst), cfg, []karg{{addr, 8}, {cur, 8}, {uint64(uint32(rows)), 4}, {uint64(uint32(cols)), 4}}); err != nil {
			return d.noteErr(err)
		}
	}
	return nil
}

// OpTime is the device time of one kind of kernel in a profiled run.
type OpTime struct {
	Name  string
	Calls int
	Time  time.Duration
}

// Profile runs fn with every segment executed record by record between
// timing events (no graphs) and returns the device time per kernel, most
// expensive first.
func (d *Device) Profile(fn func() error) ([]OpTime, error) {
	d.profiling = true
	d.profile = make(map[string]*OpTime)
	err := fn()
	d.profiling = false
	var out []OpTime
	for _, t := range d.profile {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time > out[j].Time })
	return out, err
}

func recordLabel(r *record) string {
	switch r.kind {
	case recKernel:
		return r.kernel
	case recGemm:
		g := &r.gemm
		if g.Batch > 1 {
			return fmt.Sprintf("cublas batched gemm %dx%dx%d", g.M, g.N, g.K)
		}
		return fmt.Sprintf("cublas gemm %dx%dx%d", g.M, g.N, g.K)
	case recUpload:
		return "upload"
	case recCudnn:
		if r.gbias.buf != nil {
			return fmt.Sprintf("cudnn conv+bias algo %d", r.algo)
		}
		return fmt.Sprintf("cudnn conv algo %d", r.algo)
	case recLt:
		if r.lt.FP8 {
			return fmt.Sprintf("cublasLt fp8 gemm %dx%dx%d", r.lt.M, r.lt.N, r.lt.K)
		}
		if r.lt.Bias {
			return fmt.Sprintf("cublasLt gemm+bias %dx%dx%d", r.lt.M, r.lt.N, r.lt.K)
		}
		return fmt.Sprintf("cublasLt gemm %dx%dx%d", r.lt.M, r.lt.N, r.lt.K)
	}
	return "memset"
}

// runProfiled executes records one at a time between events.
func (d *Device) runProfiled(p *segPlan) error {
	evs := make([]eventHandle, 0, 2*len(p.recs))
	defer func() {
		for _, e := range evs {
			d.eng.destroyEvent(e)
		}
	}()
	for _, r := range p.recs {
		a, err := d.eng.newEvent()
		if err != nil {
			return err
		}
		evs = append(evs, a)
		bEv, err := d.eng.newEvent()
		if err != nil {
			return err
		}
		evs = append(evs, bEv)
		if err := d.eng.record(a); err != nil {
			return err
		}
		if err := d.exec(r); err != nil {
			return d.noteErr(err)
		}
		if err := d.eng.record(bEv); err != nil {
			return err
		}
	}
	if err := d.eng.sync(); err != nil {
		return d.noteErr(err)
	}
	for i, r := range p.recs {
		ms, err := d.eng.elapsed(evs[2*i], evs[2*i+1])
		if err != nil {
			return err
		}
		l := recordLabel(r)
		t := d.profile[l]
		if t == nil {
			t = &OpTime{Name: l}
			d.profile[l] = t
		}
		t.Calls++
		t.Time += time.Duration(float64(ms) * float64(time.Millisecond))
	}
	return nil
}
