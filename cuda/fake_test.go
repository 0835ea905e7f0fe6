package cuda

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda/internal/cu"
	"github.com/kiln-project/kiln/cuda/internal/cublas"
	"github.com/kiln-project/kiln/cuda/internal/cudnn"
	"github.com/kiln-project/kiln/cuda/internal/half"
	"github.com/kiln-project/kiln/cuda/internal/kernels"
)

// fakeEngine emulates the device in Go: memory as byte slices, every kernel
// of the image and cuBLAS's GemmEx by their documented semantics. It lets
// the backend's recording, planning, layouts, graph caching and parameter
// passing be tested against the CPU backend without a GPU. Accesses outside
// an allocation are errors.
type fakeEngine struct {
	mem       map[uint64][]byte
	bases     []uint64
	next      uint64
	capturing bool
	captured  []func() error
	graphs    map[graphHandle][]func() error
	nextGraph graphHandle
	launches  int
	allocs    int
	freeLimit int64 // 0: unlimited; else bytes the fake lets be allocated
	live      int64
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{mem: make(map[uint64][]byte), next: 1 << 32, graphs: make(map[graphHandle][]func() error)}
}

// newFakeDevice returns a Device over a fake engine.
func newFakeDevice(opts Options) (*Device, *fakeEngine) {
	e := newFakeEngine()
	info := Info{Ordinal: 0, Name: "fake", Major: 9, SMs: 4, Memory: 1 << 34, MaxSharedOpt: 227 << 10}
	return newDevice(info, opts, e, nil), e
}

func (e *fakeEngine) alloc(n int64) (uint64, error) {
	if e.freeLimit > 0 && e.live+n > e.freeLimit {
		return 0, errFakeOOM
	}
	p := e.next
	e.next += uint64((n + 4095) &^ 4095)
	e.next += 4096 // a gap, so that overruns never land in a neighbour
	e.mem[p] = make([]byte, n)
	for i := range e.mem[p] {
		e.mem[p][i] = 0xff // NaN-ish garbage: unwritten outputs show
	}
	i := sort.Search(len(e.bases), func(i int) bool { return e.bases[i] > p })
	e.bases = append(e.bases, 0)
	copy(e.bases[i+1:], e.bases[i:])
	e.bases[i] = p
	e.live += n
	e.allocs++
	return p, nil
}

func (e *fakeEngine) free(p uint64) {
	if m, ok := e.mem[p]; ok {
		e.live -= int64(len(m))
	}
	delete(e.mem, p)
	i := sort.Search(len(e.bases), func(i int) bool { return e.bases[i] >= p })
	if i < len(e.bases) && e.bases[i] == p {
		e.bases = append(e.bases[:i], e.bases[i+1:]...)
	}
}

// bytes returns the n bytes at addr, or panics with a clear message.
func (e *fakeEngine) bytes(addr uint64, n int64) []byte {
	i := sort.Search(len(e.bases), func(i int) bool { return e.bases[i] > addr }) - 1
	if i < 0 {
		panic(fmt.Errorf("fake device: address %#x not allocated", addr))
	}
	base := e.bases[i]
	m := e.mem[base]
	off := int64(addr - base)
	if off+n > int64(len(m)) {
		panic(fmt.Errorf("fake device: access [%#x, +%d) beyond allocation %#x of %d bytes", addr, n, base, len(m)))
	}
	return m[off : off+n]
}

func (e *fakeEngine) read(addr uint64, dt tensor.DType, n int) []float32 {
	return decode(e.bytes(addr, int64(n)*int64(dt.Size())), dt)
}

func (e *fakeEngine) write(addr uint64, dt tensor.DType, v []float32) {
	copy(e.bytes(addr, int64(len(v))*int64(dt.Size())), encode(v, dt))
}

func (e *fakeEngine) readI32(addr uint64, n int) []int32 {
	b := e.bytes(addr, int64(4*n))
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
	}
	return out
}

func (e *fakeEngine) do(f func() error) error {
	if e.capturing {
		e.captured = append(e.captured, f)
		return nil
	}
	return f()
}

func (e *fakeEngine) upload(dst uint64, src []byte) error {
	if e.capturing {
		return fmt.Errorf("fake device: upload during capture")
	}
	copy(e.bytes(dst, int64(len(src))), src)
	return nil
}

func (e *fakeEngine) download(dst []byte, src uint64) error {
	copy(dst, e.bytes(src, int64(len(dst))))
	return nil
}

func (e *fakeEngine) memset(dst uint64, n int64, v byte) error {
	return e.do(func() error {
		b := e.bytes(dst, n)
		for i := range b {
			b[i] = v
		}
		return nil
	})
}

// imageKernels is the set of entry points the real image has.
var imageKernels = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range kernels.Names() {
		m[n] = true
	}
	return m
}()

// fakeSM90A are the Hopper image's kernels, which the fake emulates as if
// that image had loaded.
var fakeSM90A = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range kernels.SM90ANames() {
		m[n] = true
	}
	return m
}()

func (e *fakeEngine) hasKernel(name string) bool { return imageKernels[name] || fakeSM90A[name] }

func (e *fakeEngine) launch(kernel string, cfg launchCfg, args []karg) error {
	if !e.hasKernel(kernel) {
		return fmt.Errorf("fake device: kernel %s is not in the compiled image", kernel)
	}
	a := append([]karg(nil), args...)
	return e.do(func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%s: %v", kernel, r)
			}
		}()
		e.launches++
		return e.emulate(kernel, cfg, a)
	})
}

func (e *fakeEngine) gemm(g *cublas.Gemm) error {
	gc := *g
	return e.do(func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("gemm: %v", r)
			}
		}()
		e.emulateGemm(&gc)
		return nil
	})
}

func (e *fakeEngine) beginCapture() error {
	if e.capturing {
		return fmt.Errorf("fake device: nested capture")
	}
	e.capturing, e.captured = true, nil
	return nil
}

func (e *fakeEngine) endCapture() (graphHandle, int, error) {
	e.capturing = false
	e.nextGraph++
	e.graphs[e.nextGraph] = e.captured
	return e.nextGraph, len(e.captured), nil
}

func (e *fakeEngine) launchGraph(g graphHandle) error {
	for _, f := range e.graphs[g] {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

func (e *fakeEngine) destroyGraph(g graphHandle)                { delete(e.graphs, g) }
func (e *fakeEngine) sync() error                               { return nil }
func (e *fakeEngine) memInfo() (int64, int64, error)            { return 1 << 34, 1 << 34, nil }
func (e *fakeEngine) newEvent() (eventHandle, error)            { return 1, nil }
func (e *fakeEngine) record(eventHandle) error                  { return nil }
func (e *fakeEngine) elapsed(a, b eventHandle) (float32, error) { return 0, nil }
func (e *fakeEngine) close()                                    {}

var errFakeOOM = &fakeOOMError{}

type fakeOOMError struct{}

func (*fakeOOMError) Error() string { return "fake out of memory" }

// ---- kernel semantics ----

func dtOf(s string) tensor.DType {
	switch s {
	case "f16":
		return tensor.F16
	case "bf16":
		return tensor.BF16
	case "f32":
		return tensor.F32
	}
	panic("unknown dtype suffix " + s)
}

func (a karg) p() uint64  { return a.v }
func (a karg) i() int     { return int(int32(uint32(a.v))) }
func (a karg) f() float32 { return math.Float32frombits(uint32(a.v)) }

func gelu(x float64) float64  { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }
func siluF(x float64) float64 { return x / (1 + math.Exp(-x)) }

func (e *fakeEngine) emulate(kernel string, cfg launchCfg, a []karg) error {
	parts := strings.Split(kernel, "_")
	last := parts[len(parts)-1]
	switch {
	case strings.HasPrefix(kernel, "q8_amax_"):
		// Block b of the grid-stride loop takes the 8-element vectors
		// i with (i / 256) % grid == b.
		n, grid := a[2].i(), int(cfg.grid[0])
		x := e.read(a[1].p(), dtOf(last), n)
		part := make([]float32, grid)
		for i, v := range x {
			b := (i / 8 / 256) % grid
			part[b] = max(part[b], float32(math.Abs(float64(v))))
		}
		e.write(a[0].p(), tensor.F32, part)
	case strings.HasPrefix(kernel, "q8_quant_"):
		parts, n := a[4].i(), a[5].i()
		var amax float32
		for _, v := range e.read(a[3].p(), tensor.F32, parts) {
			amax = max(amax, v)
		}
		s := float32(1)
		if amax > 0 {
			s = amax / 448
		}
		inv := 1 / s
		q := e.bytes(a[0].p(), int64(n))
		for i, v := range e.read(a[2].p(), dtOf(last), n) {
			q[i] = half.ToE4M3(v * inv)
		}
		e.write(a[1].p(), tensor.F32, []float32{s})
	case strings.HasPrefix(kernel, "convert_"):
		from, to := dtOf(parts[1]), dtOf(parts[2])
		n := a[2].i()
		e.write(a[0].p(), to, e.read(a[1].p(), from, n))
	case strings.HasPrefix(kernel, "unary_"):
		dt := dtOf(last)
		n, op, s := a[2].i(), a[3].i(), float64(a[4].f())
		x := e.read(a[1].p(), dt, n)
		for i, v := range x {
			f := float64(v)
			switch op {
			case opScale:
				f *= s
			case opSiLU:
				f = siluF(f)
			case opGELU:
				f = gelu(f)
			case opQuickGELU:
				f = f / (1 + math.Exp(-1.702*f))
			}
			x[i] = float32(f)
		}
		e.write(a[0].p(), dt, x)
	case strings.HasPrefix(kernel, "add_bcast_"):
		dt, vdt := dtOf(parts[2]), dtOf(parts[3])
		n, od, om, idv, imod := a[3].i(), a[4].i(), a[5].i(), a[6].i(), a[7].i()
		x := e.read(a[1].p(), dt, n)
		nv := 0
		for i := 0; i < n; i++ {
			nv = max(nv, (i/od)*om+(i/idv)%imod+1)
		}
		v := e.read(a[2].p(), vdt, nv)
		for i := range x {
			x[i] += v[(i/od)*om+(i/idv)%imod]
		}
		e.write(a[0].p(), dt, x)
	case strings.HasPrefix(kernel, "add_"):
		dt := dtOf(last)
		n := a[3].i()
		x, y := e.read(a[1].p(), dt, n), e.read(a[2].p(), dt, n)
		for i := range x {
			x[i] += y[i]
		}
		e.write(a[0].p(), dt, x)
	case strings.HasPrefix(kernel, "bias_act_"):
		dt := dtOf(last)
		rows, cols, act := a[4].i(), a[5].i(), a[6].i()
		x := e.read(a[1].p(), dt, rows*cols)
		var bias, res []float32
		if a[2].p() != 0 {
			bias = e.read(a[2].p(), tensor.F32, cols)
		}
		if a[3].p() != 0 {
			res = e.read(a[3].p(), dt, rows*cols)
		}
		for i := range x {
			f := float64(x[i])
			if bias != nil {
				f += float64(bias[i%cols])
			}
			switch act {
			case 1:
				f = siluF(f)
			case 2:
				f = gelu(f)
			}
			if res != nil {
				f += float64(res[i])
			}
			x[i] = float32(f)
		}
		e.write(a[0].p(), dt, x)
	case strings.HasPrefix(kernel, "geglu_"):
		dt := dtOf(last)
		rows, h := a[2].i(), a[3].i()
		x := e.read(a[1].p(), dt, rows*2*h)
		out := make([]float32, rows*h)
		for r := 0; r < rows; r++ {
			for j := 0; j < h; j++ {
				out[r*h+j] = float32(float64(x[r*2*h+j]) * gelu(float64(x[r*2*h+h+j])))
			}
		}
		e.write(a[0].p(), dt, out)
	case strings.HasPrefix(kernel, "concat_c_"):
		dt := dtOf(last)
		px, c1, c2 := a[3].i(), a[4].i(), a[5].i()
		x, y := e.read(a[1].p(), dt, px*c1), e.read(a[2].p(), dt, px*c2)
		out := make([]float32, 0, px*(c1+c2))
		for p := 0; p < px; p++ {
			out = append(out, x[p*c1:(p+1)*c1]...)
			out = append(out, y[p*c2:(p+1)*c2]...)
		}
		e.write(a[0].p(), dt, out)
	case strings.HasPrefix(kernel, "upsample2x_"):
		dt := dtOf(last)
		bn, h, w, c := a[2].i(), a[3].i(), a[4].i(), a[5].i()
		x := e.read(a[1].p(), dt, bn*h*w*c)
		out := make([]float32, bn*4*h*w*c)
		for b := 0; b < bn; b++ {
			for y := 0; y < 2*h; y++ {
				for xx := 0; xx < 2*w; xx++ {
					copy(out[((b*2*h+y)*2*w+xx)*c:][:c], x[((b*h+y/2)*w+xx/2)*c:][:c])
				}
			}
		}
		e.write(a[0].p(), dt, out)
	case strings.HasPrefix(kernel, "transpose_"):
		dt := dtOf(last)
		rows, cols, batch := a[2].i(), a[3].i(), int(cfg.grid[2])
		x := e.read(a[1].p(), dt, batch*rows*cols)
		out := make([]float32, len(x))
		for k := 0; k < batch; k++ {
			for r := 0; r < rows; r++ {
				for c := 0; c < cols; c++ {
					out[k*rows*cols+c*rows+r] = x[k*rows*cols+r*cols+c]
				}
			}
		}
		e.write(a[0].p(), dt, out)
	case strings.HasPrefix(kernel, "embedding_"):
		dt := dtOf(last)
		n, d := a[3].i(), a[4].i()
		ids := e.readI32(a[2].p(), n)
		out := make([]float32, 0, n*d)
		for _, id := range ids {
			out = append(out, e.read(a[1].p()+uint64(int(id)*d*dt.Size()), dt, d)...)
		}
		e.write(a[0].p(), dt, out)
	case strings.HasPrefix(kernel, "gather_rows_"):
		dt := dtOf(last)
		bn, l, d := a[3].i(), a[4].i(), a[5].i()
		rows := e.readI32(a[2].p(), bn)
		out := make([]float32, 0, bn*d)
		for b, r := range rows {
			out = append(out, e.read(a[1].p()+uint64((b*l+int(r))*d*dt.Size()), dt, d)...)
		}
		e.write(a[0].p(), dt, out)
	case strings.HasPrefix(kernel, "im2col_"):
		dt := dtOf(last)
		h, w, c, ho, wo, kh, kw, st, pt, pl := a[2].i(), a[3].i(), a[4].i(), a[5].i(), a[6].i(), a[7].i(), a[8].i(), a[9].i(), a[10].i(), a[11].i()
		row0, nrows := int(uint32(a[12].v)), int(uint32(a[13].v))
		bmax := (row0 + nrows - 1) / (ho * wo)
		x := e.read(a[1].p(), dt, (bmax+1)*h*w*c)
		k := kh * kw * c
		out := make([]float32, nrows*k)
		for lm := 0; lm < nrows; lm++ {
			m := row0 + lm
			ox, oy, b := m%wo, (m/wo)%ho, m/(wo*ho)
			for r := 0; r < kh; r++ {
				for s := 0; s < kw; s++ {
					iy, ix := oy*st-pt+r, ox*st-pl+s
					if iy < 0 || iy >= h || ix < 0 || ix >= w {
						continue
					}
					copy(out[lm*k+(r*kw+s)*c:][:c], x[((b*h+iy)*w+ix)*c:][:c])
				}
			}
		}
		e.write(a[0].p(), dt, out)
	case strings.HasPrefix(kernel, "layernorm_"):
		dt := dtOf(last)
		d, eps, rows := a[4].i(), float64(a[5].f()), int(cfg.grid[0])
		if strings.HasPrefix(kernel, "layernorm_warp_") {
			rows, d, eps = a[4].i(), a[5].i(), float64(a[6].f())
			if int(cfg.grid[0]) != (rows+7)/8 || d%(16/dt.Size()) != 0 || d > 8*32*16/dt.Size() {
				return fmt.Errorf("layernorm_warp launch %+v for %d rows of %d", cfg, rows, d)
			}
		}
		x := e.read(a[1].p(), dt, rows*d)
		var w, b []float32
		if a[2].p() != 0 {
			w = e.read(a[2].p(), tensor.F32, d)
		}
		if a[3].p() != 0 {
			b = e.read(a[3].p(), tensor.F32, d)
		}
		for r := 0; r < rows; r++ {
			row := x[r*d : (r+1)*d]
			var s, q float64
			for _, v := range row {
				s += float64(v)
			}
			mean := s / float64(d)
			for _, v := range row {
				q += (float64(v) - mean) * (float64(v) - mean)
			}
			rs := 1 / math.Sqrt(q/float64(d)+eps)
			for i, v := range row {
				f := (float64(v) - mean) * rs
				if w != nil {
					f *= float64(w[i])
				}
				if b != nil {
					f += float64(b[i])
				}
				row[i] = float32(f)
			}
		}
		e.write(a[0].p(), dt, x)
	case strings.HasPrefix(kernel, "gn_sums_"):
		dt := dtOf(last)
		hw, c, splits, bn := a[2].i(), a[3].i(), a[4].i(), int(cfg.grid[1])
		if int(cfg.grid[0]) != splits || cfg.shmem < uint32(8*c) {
			return fmt.Errorf("gn_sums launch %+v for %d splits, %d channels", cfg, splits, c)
		}
		x := e.read(a[1].p(), dt, bn*hw*c)
		ws := make([]float32, bn*splits*c*2)
		for b := 0; b < bn; b++ {
			for s := 0; s < splits; s++ {
				p0, p1 := hw*s/splits, hw*(s+1)/splits
				for ch := 0; ch < c; ch++ {
					k := float64(x[b*hw*c+ch])
					var s1, s2 float64
					for p := p0; p < p1; p++ {
						t := float64(x[(b*hw+p)*c+ch]) - k
						s1 += t
						s2 += t * t
					}
					o := ((b*splits+s)*c + ch) * 2
					ws[o], ws[o+1] = float32(s1), float32(s2)
				}
			}
		}
		e.write(a[0].p(), tensor.F32, ws)
	case strings.HasPrefix(kernel, "gn_affine_"):
		dt := dtOf(last)
		hw, c, groups, splits, eps := a[5].i(), a[6].i(), a[7].i(), a[8].i(), float64(a[9].f())
		bn, cpg := int(cfg.grid[1]), c/groups
		gpb := int(cfg.block[0]) / cpg
		if gpb < 1 || int(cfg.block[0])%cpg != 0 || int(cfg.grid[0])*gpb < groups {
			return fmt.Errorf("gn_affine launch %+v for %d groups of %d", cfg, groups, cpg)
		}
		ws := e.read(a[1].p(), tensor.F32, bn*splits*c*2)
		x := e.read(a[2].p(), dt, bn*hw*c)
		var w, bias []float32
		if a[3].p() != 0 {
			w = e.read(a[3].p(), tensor.F32, c)
		}
		if a[4].p() != 0 {
			bias = e.read(a[4].p(), tensor.F32, c)
		}
		n := float64(hw)
		ab := make([]float32, bn*c*2)
		for b := 0; b < bn; b++ {
			cm := make([]float64, c)
			ci := make([]float64, c)
			for ch := 0; ch < c; ch++ {
				var s1, s2 float64
				for s := 0; s < splits; s++ {
					o := ((b*splits+s)*c + ch) * 2
					s1 += float64(ws[o])
					s2 += float64(ws[o+1])
				}
				cm[ch] = float64(x[b*hw*c+ch]) + s1/n
				ci[ch] = s2 - s1*s1/n
			}
			for g := 0; g < groups; g++ {
				var gm, m2 float64
				for i := 0; i < cpg; i++ {
					gm += cm[g*cpg+i]
				}
				gm /= float64(cpg)
				for i := 0; i < cpg; i++ {
					d := cm[g*cpg+i] - gm
					m2 += ci[g*cpg+i] + n*d*d
				}
				rstd := 1 / math.Sqrt(max(0, m2/(n*float64(cpg)))+eps)
				for i := 0; i < cpg; i++ {
					ch := g*cpg + i
					sc := rstd
					if w != nil {
						sc *= float64(w[ch])
					}
					sh := -gm * sc
					if bias != nil {
						sh += float64(bias[ch])
					}
					ab[(b*c+ch)*2], ab[(b*c+ch)*2+1] = float32(sc), float32(sh)
				}
			}
		}
		e.write(a[0].p(), tensor.F32, ab)
	case strings.HasPrefix(kernel, "gn_apply_"):
		dt := dtOf(last)
		bn, hw, c, silu := a[3].i(), a[4].i(), a[5].i(), a[6].i()
		x := e.read(a[1].p(), dt, bn*hw*c)
		ab := e.read(a[2].p(), tensor.F32, bn*c*2)
		for i := range x {
			b, ch := i/(hw*c), i%c
			f := float64(x[i])*float64(ab[(b*c+ch)*2]) + float64(ab[(b*c+ch)*2+1])
			if silu != 0 {
				f = siluF(f)
			}
			x[i] = float32(f)
		}
		e.write(a[0].p(), dt, x)
	case strings.HasPrefix(kernel, "gn_fused_"):
		// The launch contract first: whole groups per block, every channel
		// of a block on its own thread, the slab in shared memory.
		dt := dtOf(last)
		hw, c, cpg, gpb, eps, silu := a[4].i(), a[5].i(), a[6].i(), a[7].i(), float64(a[8].f()), a[9].i()
		bn, gc := int(cfg.grid[1]), cpg*gpb
		if cpg < 1 || c%gc != 0 || int(cfg.grid[0])*gc != c || int(cfg.block[0]) < gc || cfg.shmem < uint32(hw*gc*dt.Size()+(3*gc+2*gpb)*4) {
			return fmt.Errorf("gn_fused launch %+v for %d channels, %d per group, %d groups per block", cfg, c, cpg, gpb)
		}
		x := e.read(a[1].p(), dt, bn*hw*c)
		var w, bias []float32
		if a[2].p() != 0 {
			w = e.read(a[2].p(), tensor.F32, c)
		}
		if a[3].p() != 0 {
			bias = e.read(a[3].p(), tensor.F32, c)
		}
		y := make([]float32, len(x))
		for b := 0; b < bn; b++ {
			for g := 0; g < c/cpg; g++ {
				var sum, sq float64
				for p := 0; p < hw; p++ {
					for k := 0; k < cpg; k++ {
						sum += float64(x[(b*hw+p)*c+g*cpg+k])
					}
				}
				n := float64(hw * cpg)
				mean := sum / n
				for p := 0; p < hw; p++ {
					for k := 0; k < cpg; k++ {
						d := float64(x[(b*hw+p)*c+g*cpg+k]) - mean
						sq += d * d
					}
				}
				rstd := 1 / math.Sqrt(sq/n+eps)
				for p := 0; p < hw; p++ {
					for k := 0; k < cpg; k++ {
						ch, i := g*cpg+k, (b*hw+p)*c+g*cpg+k
						f := (float64(x[i]) - mean) * rstd
						if w != nil {
							f *= float64(w[ch])
						}
						if bias != nil {
							f += float64(bias[ch])
						}
						if silu != 0 {
							f = siluF(f)
						}
						y[i] = float32(f)
					}
				}
			}
		}
		e.write(a[0].p(), dt, y)
	case strings.HasPrefix(kernel, "softmax_rows_"):
		dt := dtOf(last)
		cols, causal, q0, qrows, rows := a[2].i(), a[3].i(), a[4].i(), a[5].i(), int(cfg.grid[0])
		s := e.read(a[1].p(), tensor.F32, rows*cols)
		out := make([]float32, rows*cols)
		for r := 0; r < rows; r++ {
			lim := cols
			if causal != 0 {
				lim = min(cols, q0+r%qrows+1)
			}
			m := math.Inf(-1)
			for j := 0; j < lim; j++ {
				m = math.Max(m, float64(s[r*cols+j]))
			}
			var sum float64
			for j := 0; j < lim; j++ {
				sum += math.Exp(float64(s[r*cols+j]) - m)
			}
			for j := 0; j < lim; j++ {
				out[r*cols+j] = float32(math.Exp(float64(s[r*cols+j])-m) / sum)
			}
		}
		e.write(a[0].p(), dt, out)
	case strings.HasPrefix(kernel, "flash"), strings.HasPrefix(kernel, "fh"):
		// fh: the Hopper kernels (emulated as if their image had loaded),
		// same arguments plus the descriptor convention.
		dt := dtOf(last)
		dp, _ := strconv.Atoi(strings.TrimLeft(parts[0], "flashpw"))
		wantSmem, bm := uint32(2*64*(dp+8)*2), 64
		switch {
		case strings.HasPrefix(parts[0], "fh"):
			wantSmem, bm = uint32(fhSmem(dp)), 128
			if l := a[13].i(); l < 0 || l > 3 || cfg.block[0] != 256 {
				return fmt.Errorf("fh launch %+v, layout %d", cfg, l)
			}
		case strings.HasPrefix(parts[0], "flashp"):
			wantSmem = uint32(5 * 64 * (dp + 8) * 2)
		case strings.HasPrefix(parts[0], "flashw"):
			wantSmem, bm = uint32(6*64*(dp+8)*2), 128
		}
		lq, lk, d, ldq, ldk, ldv, ldo := a[4].i(), a[5].i(), a[6].i(), a[7].i(), a[8].i(), a[9].i(), a[10].i()
		sl2, causal := float64(a[11].f()), a[12].i()
		if d > dp || d%8 != 0 {
			return fmt.Errorf("head size %d for flash%d", d, dp)
		}
		bn, h := int(cfg.grid[2]), int(cfg.grid[1])
		if int(cfg.grid[0]) != (lq+bm-1)/bm || cfg.shmem != wantSmem {
			return fmt.Errorf("flash launch %+v for lq %d", cfg, lq)
		}
		q := e.read(a[1].p(), dt, bn*lq*ldq)
		k := e.read(a[2].p(), dt, bn*lk*ldk)
		v := e.read(a[3].p(), dt, bn*lk*ldv)
		outAll := e.read(a[0].p(), dt, bn*lq*ldo)
		for b := 0; b < bn; b++ {
			for hh := 0; hh < h; hh++ {
				for i := 0; i < lq; i++ {
					sc := make([]float64, lk)
					m := math.Inf(-1)
					for j := 0; j < lk; j++ {
						if causal != 0 && j > i {
							sc[j] = math.Inf(-1)
							continue
						}
						var s float64
						for x := 0; x < d; x++ {
							s += float64(q[(b*lq+i)*ldq+hh*d+x]) * float64(k[(b*lk+j)*ldk+hh*d+x])
						}
						sc[j] = s * sl2
						m = math.Max(m, sc[j])
					}
					var sum float64
					for j := range sc {
						sc[j] = math.Exp2(sc[j] - m)
						sum += sc[j]
					}
					for x := 0; x < d; x++ {
						var o float64
						for j := 0; j < lk; j++ {
							o += sc[j] * float64(v[(b*lk+j)*ldv+hh*d+x])
						}
						outAll[(b*lq+i)*ldo+hh*d+x] = float32(o / sum)
					}
				}
			}
		}
		e.write(a[0].p(), dt, outAll)
	case strings.HasPrefix(kernel, "conv_"):
		dt := dtOf(last)
		H, W, C, Ho, Wo, M, Cout, S, st, pt, pl, K := a[5].i(), a[6].i(), a[7].i(), a[8].i(), a[9].i(), a[10].i(), a[11].i(), a[12].i(), a[13].i(), a[14].i(), a[15].i(), a[16].i()
		if C%32 != 0 || Cout%2 != 0 || K%(S*C) != 0 {
			return fmt.Errorf("conv kernel given C %d, Cout %d, K %d", C, Cout, K)
		}
		R := K / (S * C)
		bn := M / (Ho * Wo)
		x := e.read(a[1].p(), dt, bn*H*W*C)
		w := e.read(a[2].p(), dt, Cout*K)
		var bias, res []float32
		if a[3].p() != 0 {
			bias = e.read(a[3].p(), tensor.F32, Cout)
		}
		if a[4].p() != 0 {
			res = e.read(a[4].p(), dt, M*Cout)
		}
		out := convRef(x, w, bias, res, bn, H, W, C, Ho, Wo, Cout, R, S, st, pt, pl)
		e.write(a[0].p(), dt, out)
	case strings.HasPrefix(kernel, "fill_random_"):
		dt := dtOf(last)
		n, seed, scale := a[1].i(), uint32(a[2].v), a[3].f()
		out := make([]float32, n)
		for i := range out {
			h := uint32(i)*0x9E3779B1 ^ seed
			h ^= h >> 16
			h *= 0x85EBCA6B
			h ^= h >> 13
			h *= 0xC2B2AE35
			h ^= h >> 16
			out[i] = (float32(h>>8)*(1.0/16777216)*2 - 1) * scale
		}
		e.write(a[0].p(), dt, out)
	case strings.HasPrefix(kernel, "max_diff_"):
		dt := dtOf(last)
		n := a[3].i()
		x, y := e.read(a[1].p(), dt, n), e.read(a[2].p(), dt, n)
		var d, m float64
		for i := range x {
			v := math.Abs(float64(x[i]) - float64(y[i]))
			if !(v <= 3e38) {
				v = 3e38
			}
			d = math.Max(d, v)
			m = math.Max(m, math.Abs(float64(y[i])))
		}
		e.write(a[0].p(), tensor.F32, []float32{float32(d), float32(m)})
	default:
		return fmt.Errorf("fake device: no emulation of kernel %s", kernel)
	}
	return nil
}

func cuDT(t cublas.DataType) tensor.DType {
	switch t {
	case cublas.R16F:
		return tensor.F16
	case cublas.R16BF:
		return tensor.BF16
	}
	return tensor.F32
}

// emulateGemm follows cuBLAS: column-major C = α·op(A)·op(B) + β·C per batch.
func (e *fakeEngine) emulateGemm(g *cublas.Gemm) {
	batch := max(1, g.Batch)
	at, bt, ct := cuDT(g.AType), cuDT(g.BType), cuDT(g.CType)
	rowsA, colsA := g.M, g.K
	if g.TransA == cublas.OpT {
		rowsA, colsA = g.K, g.M
	}
	rowsB, colsB := g.K, g.N
	if g.TransB == cublas.OpT {
		rowsB, colsB = g.N, g.K
	}
	if g.LDA < rowsA || g.LDB < rowsB || g.LDC < g.M {
		panic(fmt.Errorf("leading dimensions %d %d %d too small", g.LDA, g.LDB, g.LDC))
	}
	for bi := 0; bi < batch; bi++ {
		A := e.read(uint64(g.A)+uint64(int64(bi)*g.StrideA*int64(at.Size())), at, (colsA-1)*g.LDA+rowsA)
		B := e.read(uint64(g.B)+uint64(int64(bi)*g.StrideB*int64(bt.Size())), bt, (colsB-1)*g.LDB+rowsB)
		caddr := uint64(g.C) + uint64(int64(bi)*g.StrideC*int64(ct.Size()))
		C := e.read(caddr, ct, (g.N-1)*g.LDC+g.M)
		for j := 0; j < g.N; j++ {
			for i := 0; i < g.M; i++ {
				var s float64
				for l := 0; l < g.K; l++ {
					var av, bv float32
					if g.TransA == cublas.OpN {
						av = A[i+l*g.LDA]
					} else {
						av = A[l+i*g.LDA]
					}
					if g.TransB == cublas.OpN {
						bv = B[l+j*g.LDB]
					} else {
						bv = B[j+l*g.LDB]
					}
					s += float64(av) * float64(bv)
				}
				v := float64(g.Alpha) * s
				if g.Beta != 0 {
					v += float64(g.Beta) * float64(C[i+j*g.LDC])
				}
				C[i+j*g.LDC] = float32(v)
			}
		}
		e.write(caddr, ct, C)
	}
}

func (*fakeOOMError) Is(target error) bool { return target == cu.ErrOutOfMemory }

func (e *fakeEngine) destroyEvent(eventHandle) {}
func (e *fakeEngine) hasCuDNN() bool           { return true }

func (e *fakeEngine) cudnnFind(sh cudnn.ConvShape, x, w, y uint64) ([]cudnn.AlgoPerf, error) {
	return []cudnn.AlgoPerf{{Algo: 1}}, nil
}

// cudnnConv emulates cuDNN's NHWC cross-correlation with KRSC filters.
func (e *fakeEngine) cudnnConv(c *cudnnCall) error {
	cc := *c
	sh := cc.shape
	return e.do(func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("cudnn conv: %v", r)
			}
		}()
		dt := tensorOf(sh.DataType)
		var bias, z []float32
		if cc.b != 0 {
			bias = e.read(cc.b, dt, sh.K)
		}
		if cc.z != 0 {
			z = e.read(cc.z, dt, sh.N*sh.OutH*sh.OutW*sh.K)
		}
		out := convRef(e.read(cc.x, dt, sh.N*sh.H*sh.W*sh.C), e.read(cc.w, dt, sh.K*sh.R*sh.S*sh.C), bias, z,
			sh.N, sh.H, sh.W, sh.C, sh.OutH, sh.OutW, sh.K, sh.R, sh.S, sh.Stride, sh.PadH, sh.PadW)
		e.write(cc.y, dt, out)
		return nil
	})
}

// convRef is a direct channels-last convolution.
func convRef(x, w, bias, res []float32, bn, H, W, C, Ho, Wo, Cout, R, S, st, pt, pl int) []float32 {
	M, K := bn*Ho*Wo, R*S*C
	out := make([]float32, M*Cout)
	for m := 0; m < M; m++ {
		ox, oy, b := m%Wo, (m/Wo)%Ho, m/(Wo*Ho)
		for n := 0; n < Cout; n++ {
			var s float64
			for r := 0; r < R; r++ {
				for ss := 0; ss < S; ss++ {
					iy, ix := oy*st-pt+r, ox*st-pl+ss
					if iy < 0 || iy >= H || ix < 0 || ix >= W {
						continue
					}
					xo := ((b*H+iy)*W + ix) * C
					wo := n*K + (r*S+ss)*C
					for c := 0; c < C; c++ {
						s += float64(x[xo+c]) * float64(w[wo+c])
					}
				}
			}
			if bias != nil {
				s += float64(bias[n])
			}
			if res != nil {
				s += float64(res[m*Cout+n])
			}
			out[m*Cout+n] = float32(s)
		}
	}
	return out
}

func (e *fakeEngine) hasLt() bool { return true }

// ltMatmul emulates cuBLASLt: D = op(A)·op(B) + beta·C + bias (per row of D).
func (e *fakeEngine) ltMatmul(c *ltCall) error {
	k := *c
	return e.do(func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("lt matmul: %v", r)
			}
		}()
		sh := k.shape
		dt := cuDT(sh.Type)
		if sh.FP8 {
			return e.lt8(&k)
		}
		g := cublas.Gemm{TransA: sh.TransA, TransB: sh.TransB, M: sh.M, N: sh.N, K: sh.K, Alpha: 1,
			A: cu.DevicePtr(k.a), AType: sh.Type, LDA: sh.LDA, B: cu.DevicePtr(k.b), BType: sh.Type, LDB: sh.LDB,
			C: cu.DevicePtr(k.d), CType: sh.Type, LDC: sh.LDC, Batch: 1}
		var cvals []float32
		if k.beta != 0 {
			cvals = e.read(k.c, dt, (sh.N-1)*sh.LDC+sh.M)
		}
		e.emulateGemm(&g)
		out := e.read(k.d, dt, (sh.N-1)*sh.LDC+sh.M)
		var bias []float32
		if sh.Bias {
			bias = e.read(k.e, dt, sh.M)
		}
		for j := 0; j < sh.N; j++ {
			for i := 0; i < sh.M; i++ {
				v := out[i+j*sh.LDC]
				if cvals != nil {
					v += k.beta * cvals[i+j*sh.LDC]
				}
				if bias != nil {
					v += bias[i]
				}
				out[i+j*sh.LDC] = v
			}
		}
		e.write(k.d, dt, out)
		return nil
	})
}

// lt8 emulates an fp8 cuBLASLt product (op(A) = Aᵀ, op(B) = B, E4M3 with
// float32 scales): D = sA·sB·Aᵀ·B + beta·C + bias.
func (e *fakeEngine) lt8(k *ltCall) error {
	sh := k.shape
	if sh.TransA != cublas.OpT || sh.TransB != cublas.OpN {
		return fmt.Errorf("fake fp8 product: only TN is supported (as on Hopper)")
	}
	dt := cuDT(sh.Type)
	sa, sb := e.read(k.sa, tensor.F32, 1)[0], e.read(k.sb, tensor.F32, 1)[0]
	a := e.bytes(k.a, int64((sh.M-1)*sh.LDA+sh.K))
	b := e.bytes(k.b, int64((sh.N-1)*sh.LDB+sh.K))
	var cvals, bias []float32
	if k.beta != 0 {
		cvals = e.read(k.c, dt, (sh.N-1)*sh.LDC+sh.M)
	}
	if sh.Bias {
		bias = e.read(k.e, dt, sh.M)
	}
	out := e.read(k.d, dt, (sh.N-1)*sh.LDC+sh.M)
	for j := 0; j < sh.N; j++ {
		for i := 0; i < sh.M; i++ {
			var s float64
			for l := 0; l < sh.K; l++ {
				s += float64(half.FromE4M3(a[l+i*sh.LDA])) * float64(half.FromE4M3(b[l+j*sh.LDB]))
			}
			v := float32(s * float64(sa) * float64(sb))
			if cvals != nil {
				v += k.beta * cvals[i+j*sh.LDC]
			}
			if bias != nil {
				v += bias[i]
			}
			out[i+j*sh.LDC] = v
		}
	}
	e.write(k.d, dt, out)
	return nil
}
