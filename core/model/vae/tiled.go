package vae

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/model/nn"
	"github.com/kiln-project/kiln/core/tensor"
)

// DefaultTile is the tile side DecodeTiled uses when TileOptions.Tile is 0.
const DefaultTile = 256

// TileOptions configure DecodeTiled.
type TileOptions struct {
	// Tile is the side, in pixels of each layer's output, of the square
	// tiles that the decoder's upper layers are computed in (0 means
	// DefaultTile). The backend only ever holds one tile's activations of
	// those layers, so smaller tiles mean less backend memory and more,
	// smaller calls.
	Tile int
}

// DecodeTiled decodes like Decode, with bounded backend memory for large
// images, and gives the same result as Decode up to float rounding.
//
// Independent tiles blended over their overlap (diffusers' tiled decoding)
// disagree with a whole-image decode by percents, because every GroupNorm
// normalises a tile by that tile's statistics. DecodeTiled instead runs the
// decoder layer by layer: the latent-resolution part (post_quant_conv,
// conv_in, the mid block with its global attention) runs whole on the
// backend; above it, each activation between two GroupNorms is kept on the
// host, the GroupNorm statistics are gathered over the whole activation,
// and each 3×3 convolution is computed tile by tile on the backend from its
// input tile plus a one-pixel halo, normalised with those global
// statistics. Tiles therefore need no overlap or blending: there are no
// seams. Host memory holds about two full activations of the widest layer
// (for SD at 2048², about 6 GiB); samples of a batch are decoded one after
// another.
func (m *Model) DecodeTiled(ctx context.Context, latents []float32, shape [4]int, opt TileOptions) (img []float32, imgShape [4]int, err error) {
	img, imgShape, _, err = m.decodeTiled(ctx, latents, shape, opt)
	return img, imgShape, err
}

// decodeTiled is DecodeTiled, also returning the smallest number of tiles
// any tiled layer was split into (for tests).
func (m *Model) decodeTiled(ctx context.Context, latents []float32, shape [4]int, opt TileOptions) (img []float32, imgShape [4]int, minTiles int, err error) {
	defer backend.Recover(&err)
	if err := checkShape("latents", latents, shape, m.cfg.LatentChannels); err != nil {
		return nil, imgShape, 0, err
	}
	tile := opt.Tile
	if tile == 0 {
		tile = DefaultTile
	}
	if tile < 1 {
		return nil, imgShape, 0, fmt.Errorf("vae: tile size %d is not positive", opt.Tile)
	}
	f := m.Factor()
	bn, lc, lh, lw := shape[0], shape[1], shape[2], shape[3]
	imgShape = [4]int{bn, m.cfg.OutChannels, lh * f, lw * f}
	per := imgShape[1] * imgShape[2] * imgShape[3]
	img = make([]float32, bn*per)
	t := &tiler{be: m.be, tile: tile, minTiles: math.MaxInt}
	for b := range bn {
		if err := ctx.Err(); err != nil {
			return nil, imgShape, 0, err
		}
		low := m.decodeLow(latents[b*lc*lh*lw:(b+1)*lc*lh*lw], [4]int{1, lc, lh, lw})
		p := plane{c: low.Dim(1), h: low.Dim(2), w: low.Dim(3), d: m.be.ToFloat32(low)}
		m.be.Free(low)
		for _, l := range m.dec.up {
			for _, r := range l.resnets {
				if p, err = t.resnet(ctx, r, p); err != nil {
					return nil, imgShape, 0, err
				}
			}
			if l.resample != nil {
				if p, err = t.conv(ctx, p, nil, true, l.resample, nil, nil, nil); err != nil {
					return nil, imgShape, 0, err
				}
			}
		}
		pre := t.groupNorm(m.dec.normOut, p, true)
		if p, err = t.conv(ctx, p, pre, false, m.dec.convOut, nil, nil, nil); err != nil {
			return nil, imgShape, 0, err
		}
		copy(img[b*per:(b+1)*per], p.d)
	}
	return img, imgShape, t.minTiles, nil
}

// EncodeTiled encodes like Encode, with bounded backend memory for large
// images, and gives the same result as Encode up to float rounding: the
// encoder runs layer by layer as DecodeTiled's decoder does (every
// GroupNorm with statistics over the whole activation, every convolution —
// the stride-2 downsamplers included — tile by tile from its input window),
// so there are no seams and nothing to blend; the mid block, with its
// global attention, and the output layers run whole at latent resolution.
// Samples of a batch are encoded one after another.
func (m *Model) EncodeTiled(ctx context.Context, img []float32, shape [4]int, opt TileOptions) (mean, logvar []float32, latShape [4]int, err error) {
	mean, logvar, latShape, _, err = m.encodeTiled(ctx, img, shape, opt)
	return mean, logvar, latShape, err
}

// encodeTiled is EncodeTiled, also returning the smallest number of tiles
// any tiled layer was split into (for tests).
func (m *Model) encodeTiled(ctx context.Context, img []float32, shape [4]int, opt TileOptions) (mean, logvar []float32, latShape [4]int, minTiles int, err error) {
	defer backend.Recover(&err)
	if err := checkShape("image", img, shape, m.cfg.InChannels); err != nil {
		return nil, nil, latShape, 0, err
	}
	tile := opt.Tile
	if tile == 0 {
		tile = DefaultTile
	}
	if tile < 1 {
		return nil, nil, latShape, 0, fmt.Errorf("vae: tile size %d is not positive", opt.Tile)
	}
	t := &tiler{be: m.be, tile: tile, minTiles: math.MaxInt}
	bn, per := shape[0], shape[1]*shape[2]*shape[3]
	e := m.enc
	for b := range bn {
		if err := ctx.Err(); err != nil {
			return nil, nil, latShape, 0, err
		}
		p := plane{c: shape[1], h: shape[2], w: shape[3], d: img[b*per : (b+1)*per]}
		if p, err = t.conv(ctx, p, nil, false, e.convIn, nil, nil, nil); err != nil {
			return nil, nil, latShape, 0, err
		}
		for _, l := range e.down {
			for _, r := range l.resnets {
				if p, err = t.resnet(ctx, r, p); err != nil {
					return nil, nil, latShape, 0, err
				}
			}
			if l.resample != nil {
				if p, err = t.conv(ctx, p, nil, false, l.resample, nil, nil, nil); err != nil {
					return nil, nil, latShape, 0, err
				}
			}
		}
		h := m.be.FromFloat32(tensor.Shape{1, p.c, p.h, p.w}, p.d)
		mu, lv, ls := m.encodeLow(h)
		if b == 0 {
			latShape = [4]int{bn, ls[1], ls[2], ls[3]}
			mean = make([]float32, 0, bn*len(mu))
			logvar = make([]float32, 0, bn*len(lv))
		}
		mean, logvar = append(mean, mu...), append(logvar, lv...)
	}
	return mean, logvar, latShape, t.minTiles, nil
}

// plane is one sample's activation (C, H, W) held on the host.
type plane struct {
	c, h, w int
	d       []float32
}

// affine is a GroupNorm with known statistics, as a per-channel
// y = x·scale + shift, optionally followed by SiLU.
type affine struct {
	scale, shift []float32
	silu         bool
}

// tiler runs convolutions tile by tile on a backend.
type tiler struct {
	be       backend.Backend
	tile     int
	minTiles int
}

// resnet runs a ResNet block (without time embedding) on x.
func (t *tiler) resnet(ctx context.Context, r *nn.Resnet, x plane) (plane, error) {
	h, err := t.conv(ctx, x, t.groupNorm(r.Norm1, x, true), false, r.Conv1, nil, nil, nil)
	if err != nil {
		return plane{}, err
	}
	var dst *plane
	if r.Shortcut == nil {
		dst = &x // each tile reads x only where it writes: update in place
	}
	return t.conv(ctx, h, t.groupNorm(r.Norm2, h, true), false, r.Conv2, &x, r.Shortcut, dst)
}

// groupNorm computes g's statistics over all of x and returns the
// normalisation as a per-channel affine map.
func (t *tiler) groupNorm(g *nn.GroupNorm, x plane, silu bool) *affine {
	w := t.be.ToFloat32(g.W.T)
	b := t.be.ToFloat32(g.B.T)
	if len(w) != x.c || x.c%g.Groups != 0 {
		backend.Fail("GroupNorm", "%d channels for a norm of %d in %d groups", x.c, len(w), g.Groups)
	}
	cpg := x.c / g.Groups
	hw := x.h * x.w
	a := &affine{scale: make([]float32, x.c), shift: make([]float32, x.c), silu: silu}
	parallel(g.Groups, func(gi int) {
		vals := x.d[gi*cpg*hw : (gi+1)*cpg*hw]
		var sum float64
		for _, v := range vals {
			sum += float64(v)
		}
		mean := sum / float64(len(vals))
		var ss float64
		for _, v := range vals {
			d := float64(v) - mean
			ss += d * d
		}
		rstd := 1 / math.Sqrt(ss/float64(len(vals))+float64(g.Eps))
		for c := gi * cpg; c < (gi+1)*cpg; c++ {
			s := rstd * float64(w[c])
			a.scale[c] = float32(s)
			a.shift[c] = float32(float64(b[c]) - mean*s)
		}
	})
	return a
}

// conv computes conv(pre(up(src))) tile by tile (any stride and padding
// of c; tiles are in output pixels), where up is nearest 2×
// upsampling when upsample is set and pre the affine (+SiLU) map when not
// nil. With residual set it adds residual (through shortcut, a 1×1 conv,
// when not nil). The result goes to dst when not nil (which must have the
// result's size), else to a new plane.
func (t *tiler) conv(ctx context.Context, src plane, pre *affine, upsample bool, c *nn.Conv2D, residual *plane, shortcut *nn.Conv2D, dst *plane) (plane, error) {
	ws := c.W.T.Shape()
	cout, cin, k := ws[0], ws[1], ws[2]
	cp := c.Params
	s := max(cp.Stride, 1)
	if cin != src.c || ws[3] != k || (s != 1 && (upsample || residual != nil)) {
		backend.Fail("Conv2D", "tiled conv of %d channels with weight %s, stride %d", src.c, ws, s)
	}
	sh, sw := src.h, src.w
	if upsample {
		sh, sw = 2*sh, 2*sw
	}
	oh, ow := (sh+cp.PadTop+cp.PadBottom-k)/s+1, (sw+cp.PadLeft+cp.PadRight-k)/s+1
	var out plane
	if dst != nil {
		out = *dst
		if out.c != cout || out.h != oh || out.w != ow {
			backend.Fail("Conv2D", "in-place destination (%d, %d, %d) for a (%d, %d, %d) result", out.c, out.h, out.w, cout, oh, ow)
		}
	} else {
		out = plane{c: cout, h: oh, w: ow, d: make([]float32, cout*oh*ow)}
	}
	ny, nx := (oh+t.tile-1)/t.tile, (ow+t.tile-1)/t.tile
	t.minTiles = min(t.minTiles, ny*nx)
	var buf []float32
	for ty := 0; ty < oh; ty += t.tile {
		for tx := 0; tx < ow; tx += t.tile {
			if err := ctx.Err(); err != nil {
				return plane{}, err
			}
			th, tw := min(t.tile, oh-ty), min(t.tile, ow-tx)
			// the input window of the tile: its zero padding is gathered
			ih, iw := (th-1)*s+k, (tw-1)*s+k
			buf = grow(buf, cin*ih*iw)
			gather(buf, src, pre, upsample, ty*s-cp.PadTop, tx*s-cp.PadLeft, ih, iw)
			in := t.be.FromFloat32(tensor.Shape{1, cin, ih, iw}, buf[:cin*ih*iw])
			o := t.be.Conv2D(in, c.W.T, c.B.T, backend.Conv2DParams{Stride: s})
			t.be.Free(in)
			if residual != nil {
				rbuf := make([]float32, residual.c*th*tw)
				gather(rbuf, *residual, nil, false, ty, tx, th, tw)
				r := t.be.FromFloat32(tensor.Shape{1, residual.c, th, tw}, rbuf)
				if shortcut != nil {
					r = nn.Swap(t.be, r, shortcut.Forward(t.be, r))
				}
				o = nn.Swap(t.be, o, t.be.Add(r, o))
				t.be.Free(r)
			}
			res := t.be.ToFloat32(o)
			t.be.Free(o)
			for ch := range cout {
				for y := range th {
					row := out.d[(ch*oh+ty+y)*ow+tx:]
					copy(row[:tw], res[(ch*th+y)*tw:(ch*th+y+1)*tw])
				}
			}
		}
	}
	return out, nil
}

// gather fills dst (C, h, w) with the window of the (optionally 2×
// nearest-upsampled, optionally normalised) plane src whose top-left corner
// is (y0, x0) in upsampled coordinates; outside the plane it writes zeros,
// the convolution's zero padding.
func gather(dst []float32, src plane, pre *affine, upsample bool, y0, x0, h, w int) {
	sh, sw := src.h, src.w
	if upsample {
		sh, sw = 2*sh, 2*sw
	}
	parallel(src.c, func(c int) {
		in := src.d[c*src.h*src.w : (c+1)*src.h*src.w]
		out := dst[c*h*w : (c+1)*h*w]
		var scale, shift float32 = 1, 0
		if pre != nil {
			scale, shift = pre.scale[c], pre.shift[c]
		}
		for y := range h {
			row := out[y*w : (y+1)*w]
			yy := y0 + y
			if yy < 0 || yy >= sh {
				clear(row)
				continue
			}
			if upsample {
				yy >>= 1
			}
			srow := in[yy*src.w : (yy+1)*src.w]
			for x := range w {
				xx := x0 + x
				if xx < 0 || xx >= sw {
					row[x] = 0
					continue
				}
				if upsample {
					xx >>= 1
				}
				v := srow[xx]
				if pre != nil {
					v = v*scale + shift
					if pre.silu {
						v = v / (1 + float32(math.Exp(float64(-v))))
					}
				}
				row[x] = v
			}
		}
	})
}

func grow(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

// parallel calls f(i) for i in [0, n) on up to GOMAXPROCS goroutines.
func parallel(n int, f func(i int)) {
	workers := min(n, runtime.GOMAXPROCS(0))
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var wg sync.WaitGroup
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f(i)
			}
		}()
	}
	wg.Wait()
}
