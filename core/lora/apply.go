package lora

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/model/nn"
	"github.com/kiln-project/kiln/core/tensor"
)

// Use is one LoRA applied to a job: its weight on the denoiser and on the
// text encoders (A1111's <lora:name:unet_w:te_w>; both equal for
// <lora:name:w>).
type Use struct {
	Name string
	LoRA *LoRA
	UNet float32
	Text float32
}

// Rows assigns a set of LoRA uses to the batch rows [From, To).
type Rows struct {
	From, To int
	Uses     []Use
}

// Target is a model part that adapters are installed on (unet.Model,
// clip.Model).
type Target interface {
	// Modules lists the adaptable layers.
	Modules() []nn.Module
	// SetAdapter installs (nil: removes) the adapter of module name and
	// reports whether the module exists.
	SetAdapter(name string, a nn.Adapter) bool
}

// Adaptable is implemented by a model family's built model that takes
// LoRAs and embeddings: its parts by namespace (UNet, TextEncoder,
// TextEncoder2) and each text encoder's hidden size.
type Adaptable interface {
	LoRATargets() map[string]Target
	EmbeddingDims() map[string]int
}

// ModulesOf lists the modules of every part of a, for Parse.
func ModulesOf(a Adaptable) Modules {
	out := Modules{}
	for ns, t := range a.LoRATargets() {
		out[ns] = t.Modules()
	}
	return out
}

// term is one factor with its effective scale.
type term struct {
	f *Factor
	s float32
}

// segment is a row range with the terms that apply to it.
type segment struct {
	from, to int
	terms    []term
}

// rowAdapter adds each row's low-rank updates to a layer's output.
type rowAdapter struct {
	segs []segment
	// reference computes on the host, row by row (the tests' reference).
	reference bool
	// maxMix overrides the constant maxMix (tests); 0: the constant.
	maxMix int
	// noRanges ignores backend.RowRanger (tests of the gather path).
	noRanges bool
}

// Install puts per-row adapters for namespace ns on t, following the batch
// layout rows (rows no range covers, and uses with weight 0, get no
// update), and returns the function that removes them. text selects the
// uses' text-encoder weight instead of the denoiser weight. Installing on
// a model that is running, or twice without removing, is the caller's bug.
func Install(t Target, ns string, rows []Rows, text bool) (remove func(), err error) {
	return install(t, ns, rows, text, rowAdapter{})
}

// install is Install with the adapters' settings taken from proto.
func install(t Target, ns string, rows []Rows, text bool, proto rowAdapter) (remove func(), err error) {
	byModule := map[string]*rowAdapter{}
	var order []string
	for _, r := range rows {
		if r.From < 0 || r.To < r.From {
			return nil, fmt.Errorf("lora: bad row range [%d, %d)", r.From, r.To)
		}
		perModule := map[string][]term{}
		for _, u := range r.Uses {
			w := u.UNet
			if text {
				w = u.Text
			}
			if w == 0 || u.LoRA == nil {
				continue
			}
			for _, f := range u.LoRA.Factors[ns] {
				perModule[f.Module] = append(perModule[f.Module], term{f: f, s: f.Scale * w})
			}
		}
		for mod, terms := range perModule {
			a := byModule[mod]
			if a == nil {
				a = &rowAdapter{reference: proto.reference, maxMix: proto.maxMix, noRanges: proto.noRanges}
				byModule[mod] = a
				order = append(order, mod)
			}
			a.segs = append(a.segs, segment{from: r.From, to: r.To, terms: terms})
		}
	}
	remove = func() {
		for _, mod := range order {
			t.SetAdapter(mod, nil)
		}
	}
	for _, mod := range order {
		if !t.SetAdapter(mod, byModule[mod]) {
			remove()
			return nil, fmt.Errorf("lora: the model has no module %s", mod)
		}
	}
	return remove, nil
}

// Adapt adds the updates with backend ops, so they stay on the device.
// A factor whose rows all share one scale (every row of the batch uses the
// same LoRA at the same weight) runs as two thin products over the batch
// (x·Downᵀ, then ·Upᵀ). Otherwise, on backends with row ranges
// (backend.RowRanger: the CPU and CUDA backends; a batch row is a
// contiguous range there) the products run on each run of rows alone and
// are added into those rows in one pass; elsewhere its rows are gathered,
// the products run on them alone, and the results are scattered back
// scaled per row (see mixRows): rows of different jobs get different
// LoRAs in one batch.
//
// TODO(lora): one strided-batched low-rank product for all runs of equal
// length (stacked factors) instead of two products per run.
func (a *rowAdapter) Adapt(be backend.Backend, x, y *tensor.Tensor, conv *backend.Conv2DParams) *tensor.Tensor {
	if a.reference {
		return a.host(be, x, y, conv)
	}
	rows := x.Shape()[0]
	type use struct {
		f      *Factor
		scales []float32 // per row, 0: not used
	}
	var uses []*use
	byFactor := map[*Factor]*use{}
	for _, sg := range a.segs {
		for _, t := range sg.terms {
			u := byFactor[t.f]
			if u == nil {
				u = &use{f: t.f, scales: make([]float32, rows)}
				byFactor[t.f] = u
				uses = append(uses, u)
			}
			for b := sg.from; b < min(sg.to, rows); b++ {
				u.scales[b] += t.s
			}
		}
	}
	rr, ranges := be.(backend.RowRanger)
	ranges = ranges && !a.noRanges
	var parts []backend.RowPart
	for _, u := range uses {
		if uniform(u.scales) {
			y = addOps(be, x, y, term{f: u.f, s: u.scales[0]}, conv)
			continue
		}
		if ranges {
			// each run of rows with one scale: its rows alone, no gather
			for from := 0; from < rows; {
				to := from + 1
				for to < rows && u.scales[to] == u.scales[from] {
					to++
				}
				if u.scales[from] != 0 {
					xs := rr.Rows(x, from, to)
					parts = append(parts, backend.RowPart{T: deltaOps(be, xs, u.f, conv), From: from, Scale: u.scales[from]})
					be.Free(xs)
				}
				from = to
			}
			continue
		}
		limit := maxMix
		if a.maxMix > 0 {
			limit = a.maxMix
		}
		y = addRows(be, x, y, u.f, u.scales, conv, limit)
	}
	if len(parts) > 0 {
		out := rr.AddRows(y, parts)
		be.Free(y)
		for _, p := range parts {
			be.Free(p.T)
		}
		y = out
	}
	return y
}

// uniform reports whether every row has the same, non-zero scale.
func uniform(s []float32) bool {
	for _, v := range s {
		if v != s[0] {
			return false
		}
	}
	return s[0] != 0
}

// maxMix is the most elements per row that mixRows moves at once: the
// CUDA backend's transpose launches one block row per 32 of them, and a
// grid has at most 65535 block rows.
const maxMix = 65535 * 32

// addRows adds s_b·up(down(x_b)) to the rows b with a non-zero scale:
// gathering those rows, running the products on them alone and scattering
// the results back scaled. Where a row of the input or the output is too
// large to mix at once (maxMix), the products run on every row and the
// rank-sized intermediate is scaled per row instead (zero for rows without
// the factor).
func addRows(be backend.Backend, x, y *tensor.Tensor, f *Factor, scales []float32, conv *backend.Conv2DParams, limit int) *tensor.Tensor {
	rows := len(scales)
	if x.Numel()/rows > limit || y.Numel()/rows > limit {
		return addMasked(be, x, y, f, scales, conv)
	}
	var idx []int
	for b, s := range scales {
		if s != 0 {
			idx = append(idx, b)
		}
	}
	if len(idx) == 0 {
		return y
	}
	n := len(idx)
	// gather (n, rows): row i picks x row idx[i]; scatter (rows, n): puts
	// result row i at idx[i], scaled
	gather := make([]float32, n*rows)
	scatter := make([]float32, rows*n)
	for i, b := range idx {
		gather[i*rows+b] = 1
		scatter[b*n+i] = scales[b]
	}
	g := be.Upload(tensor.Shape{n, rows}, tensor.F32, f32Bytes(gather))
	sc := be.Upload(tensor.Shape{rows, n}, tensor.F32, f32Bytes(scatter))
	xs := mixRows(be, x, g)
	d := deltaOps(be, xs, f, conv)
	be.Free(xs)
	dy := mixRows(be, d, sc)
	be.Free(d, g, sc)
	out := be.Add(y, dy)
	be.Free(y, dy)
	return out
}

// addMasked is addRows computing the products on every row, with the
// rank-sized intermediate scaled per row.
func addMasked(be backend.Backend, x, y *tensor.Tensor, f *Factor, scales []float32, conv *backend.Conv2DParams) *tensor.Tensor {
	rows := len(scales)
	diag := make([]float32, rows*rows)
	for b, s := range scales {
		diag[b*rows+b] = s
	}
	dm := be.Upload(tensor.Shape{rows, rows}, tensor.F32, f32Bytes(diag))
	dn, up := f.uploaded(be)
	var h, d *tensor.Tensor
	if conv != nil {
		h = be.Conv2D(x, dn, nil, *conv)
	} else {
		h = be.Linear(x, dn, nil)
	}
	hs := mixRows(be, h, dm)
	be.Free(h, dm)
	if conv != nil {
		d = be.Conv2D(hs, up, nil, backend.SymmetricPad(1, 0))
	} else {
		d = be.Linear(hs, up, nil)
	}
	be.Free(hs)
	out := be.Add(y, d)
	be.Free(y, d)
	return out
}

// mixRows returns m·x over the first dimension: x (B, ...) and m (B', B)
// give (B', ...). It moves the batch dimension last (x as the image
// (1, B, M, 1) turned into tokens (1, M, B)), applies m as a linear layer
// and moves it back, all with backend ops; with 0/1 entries it gathers
// rows exactly.
func mixRows(be backend.Backend, x, m *tensor.Tensor) *tensor.Tensor {
	sh := x.Shape()
	rows, out := sh[0], m.Shape()[0]
	per := x.Numel() / rows
	img := be.Reshape(x, tensor.Shape{1, rows, per, 1})
	tok := be.ImageToTokens(img)
	be.Free(img)
	mixed := be.Linear(tok, m, nil)
	be.Free(tok)
	back := be.TokensToImage(mixed, per, 1)
	be.Free(mixed)
	osh := sh.Clone()
	osh[0] = out
	res := be.Reshape(back, osh)
	be.Free(back)
	return res
}

// addOps returns y + s·up(down(x)) computed with backend ops; y is freed.
func addOps(be backend.Backend, x, y *tensor.Tensor, t term, conv *backend.Conv2DParams) *tensor.Tensor {
	d := deltaOps(be, x, t.f, conv)
	if t.s != 1 {
		d = nn.Swap(be, d, be.Scale(d, t.s))
	}
	out := be.Add(y, d)
	be.Free(y, d)
	return out
}

// deltaOps returns up(down(x)) (unscaled).
func deltaOps(be backend.Backend, x *tensor.Tensor, f *Factor, conv *backend.Conv2DParams) *tensor.Tensor {
	dn, up := f.uploaded(be)
	var h, d *tensor.Tensor
	if conv != nil {
		h = be.Conv2D(x, dn, nil, *conv)
		d = be.Conv2D(h, up, nil, backend.SymmetricPad(1, 0))
	} else {
		h = be.Linear(x, dn, nil)
		d = be.Linear(h, up, nil)
	}
	be.Free(h)
	return d
}

// host computes the updates of every covered row on the host.
func (a *rowAdapter) host(be backend.Backend, x, y *tensor.Tensor, conv *backend.Conv2DParams) *tensor.Tensor {
	xs, ys := x.Shape(), y.Shape()
	X, Y := be.ToFloat32(x), be.ToFloat32(y)
	rows := xs[0]
	xRow, yRow := len(X)/rows, len(Y)/rows
	for _, sg := range a.segs {
		for b := sg.from; b < min(sg.to, rows); b++ {
			xb, yb := X[b*xRow:(b+1)*xRow], Y[b*yRow:(b+1)*yRow]
			for _, t := range sg.terms {
				if conv != nil {
					hostConv(t, xb, yb, xs, ys, *conv)
				} else {
					hostLinear(t, xb, yb)
				}
			}
		}
	}
	out := be.FromFloat32(ys, Y)
	be.Free(y)
	return out
}

// hostLinear adds s·(x·Downᵀ)·Upᵀ to y for one row's positions.
func hostLinear(t term, x, y []float32) {
	f := t.f
	in, r, out := f.In(), f.Rank, f.Out
	h := make([]float32, r)
	for p := 0; p < len(x)/in; p++ {
		xp, yp := x[p*in:(p+1)*in], y[p*out:(p+1)*out]
		for k := 0; k < r; k++ {
			h[k] = dot(f.Down[k*in:(k+1)*in], xp)
		}
		for o := 0; o < out; o++ {
			yp[o] += t.s * dot(f.Up[o*r:(o+1)*r], h)
		}
	}
}

// hostConv adds s·up(conv(x, Down)) to y for one image: x (Cin, H, W),
// y (Cout, Ho, Wo).
func hostConv(t term, x, y []float32, xs, ys tensor.Shape, p backend.Conv2DParams) {
	f := t.f
	cin, H, W := xs[1], xs[2], xs[3]
	out, Ho, Wo := ys[1], ys[2], ys[3]
	kh, kw, r := f.DownShape[2], f.DownShape[3], f.Rank
	h := make([]float32, r*Ho*Wo)
	for k := 0; k < r; k++ {
		for oy := 0; oy < Ho; oy++ {
			for ox := 0; ox < Wo; ox++ {
				var s float32
				for c := 0; c < cin; c++ {
					for dy := 0; dy < kh; dy++ {
						iy := oy*p.Stride - p.PadTop + dy
						if iy < 0 || iy >= H {
							continue
						}
						for dx := 0; dx < kw; dx++ {
							ix := ox*p.Stride - p.PadLeft + dx
							if ix < 0 || ix >= W {
								continue
							}
							s += f.Down[((k*cin+c)*kh+dy)*kw+dx] * x[(c*H+iy)*W+ix]
						}
					}
				}
				h[(k*Ho+oy)*Wo+ox] = s
			}
		}
	}
	n := Ho * Wo
	for o := 0; o < out; o++ {
		yo := y[o*n : (o+1)*n]
		for k := 0; k < r; k++ {
			c := t.s * f.Up[o*r+k]
			hk := h[k*n : (k+1)*n]
			for i := range yo {
				yo[i] += c * hk[i]
			}
		}
	}
}

func dot(a, b []float32) float32 {
	var s float32
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// devFactor holds a factor's tensors on one backend.
type devFactor struct {
	down, up *tensor.Tensor
}

// uploaded returns the factor's Down and Up on be, uploading them once.
// This is the seam where the memory manager (core/memory) will account
// and evict LoRA weights (its own LRU, GPU and host tiers); for now a
// factor's device tensors live as long as the factor.
func (f *Factor) uploaded(be backend.Backend) (down, up *tensor.Tensor) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d, ok := f.dev[be]; ok {
		return d.down, d.up
	}
	upShape := tensor.Shape{f.Out, f.Rank}
	if f.Conv() {
		upShape = tensor.Shape{f.Out, f.Rank, 1, 1}
	}
	d := devFactor{
		down: be.Upload(tensor.Shape(f.DownShape), tensor.F32, f32Bytes(f.Down)),
		up:   be.Upload(upShape, tensor.F32, f32Bytes(f.Up)),
	}
	if f.dev == nil {
		f.dev = map[backend.Backend]devFactor{}
	}
	f.dev[be] = d
	return d.down, d.up
}

// f32Bytes encodes v as little-endian float32 bytes (a new slice, which
// the CPU backend may use in place for the tensor's lifetime).
func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// Key identifies the used LoRA for cache keys: its name and content hash
// (the name alone when the hash is unknown).
func (u Use) Key() string {
	if u.LoRA != nil && u.LoRA.Hash != "" {
		return u.Name + "@" + u.LoRA.Hash
	}
	return u.Name
}
