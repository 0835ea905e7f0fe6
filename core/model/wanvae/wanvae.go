// Package wanvae is the Wan-2.1-style causal 3-D convolutional autoencoder
// that Qwen-Image uses (diffusers' AutoencoderKLQwenImage; Wan 2.1's
// AutoencoderKLWan has the same layout): RMS-normalised residual blocks of
// causal 3-D convolutions, a single-head attention mid block, 2× spatial
// resampling with optional temporal convolutions, 2·z posterior channels
// and per-channel latent mean/std.
//
// Frames: this implementation encodes and decodes single frames (images).
// For the first frame of a video the causal convolutions see only zero
// padding before it, so each 3-D kernel reduces exactly to its last
// temporal slice and the temporal resampling convolutions are skipped, as
// diffusers does for the first chunk. The temporal weights are declared
// and loaded with their checkpoint names so that multi-frame support (Wan
// video) extends this file with a frame cache rather than a new model.
package wanvae

import (
	"context"
	"encoding/json"
	"fmt"
	"math"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/model/nn"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
)

// Config is the autoencoder's architecture and latent normalisation.
type Config struct {
	BaseDim            int
	ZDim               int
	DimMult            []int
	NumResBlocks       int
	TemporalDownsample []bool
	InputChannels      int
	LatentsMean        []float64
	LatentsStd         []float64
}

// Factor returns the spatial downsampling factor.
func (c Config) Factor() int { return 1 << len(c.TemporalDownsample) }

// ParseConfig reads an AutoencoderKLQwenImage / AutoencoderKLWan
// config.json; unknown fields and unsupported settings are errors.
func ParseConfig(data []byte) (Config, error) {
	r, err := nn.NewConfigReader("vae", data)
	if err != nil {
		return Config{}, err
	}
	for _, name := range r.Names() {
		switch name {
		case "base_dim", "z_dim", "dim_mult", "num_res_blocks", "attn_scales", "temperal_downsample", "dropout",
			"input_channels", "latents_mean", "latents_std", "_class_name", "_diffusers_version", "_name_or_path":
		default:
			r.Failf(name, "unknown field (not an AutoencoderKLQwenImage setting this package knows)")
		}
	}
	if cls, ok := r.OptString("_class_name"); ok && cls != "AutoencoderKLQwenImage" && cls != "AutoencoderKLWan" {
		r.Failf("_class_name", "%q is not AutoencoderKLQwenImage or AutoencoderKLWan", cls)
	}
	c := Config{
		BaseDim:       r.Int("base_dim", 96),
		ZDim:          r.Int("z_dim", 16),
		DimMult:       r.Ints("dim_mult", []int{1, 2, 4, 4}),
		NumResBlocks:  r.Int("num_res_blocks", 2),
		InputChannels: r.Int("input_channels", 3),
		LatentsMean:   r.OptFloats("latents_mean"),
		LatentsStd:    r.OptFloats("latents_std"),
	}
	if a := r.Raw("attn_scales"); a != "" && a != "[]" && a != "null" {
		r.Failf("attn_scales", "%s: attention outside the mid blocks is not implemented", a)
	}
	if f := r.Float("dropout", 0); f != 0 {
		r.Failf("dropout", "%v: only 0 (inference) is supported", f)
	}
	if err := r.Err(); err != nil {
		return Config{}, err
	}
	td, err := bools(r.Raw("temperal_downsample"), len(c.DimMult)-1)
	if err != nil {
		return Config{}, err
	}
	c.TemporalDownsample = td
	switch {
	case c.BaseDim < 1 || c.BaseDim > 1<<12 || c.ZDim < 1 || c.ZDim > 1<<10 || c.InputChannels < 1 || c.InputChannels > 16:
		return Config{}, fmt.Errorf("vae config: base_dim, z_dim, input_channels out of range")
	case len(c.DimMult) < 1 || len(c.DimMult) > 6 || c.NumResBlocks < 1 || c.NumResBlocks > 8:
		return Config{}, fmt.Errorf("vae config: dim_mult %v / num_res_blocks %d out of range", c.DimMult, c.NumResBlocks)
	case len(c.LatentsMean) != c.ZDim || len(c.LatentsStd) != c.ZDim:
		return Config{}, fmt.Errorf("vae config: latents_mean and latents_std need z_dim (%d) values each", c.ZDim)
	}
	for _, m := range c.DimMult {
		if m < 1 || m > 64 || (c.BaseDim*m)%2 != 0 {
			return Config{}, fmt.Errorf("vae config: dim_mult %v: widths must be positive and even", c.DimMult)
		}
	}
	for _, s := range c.LatentsStd {
		if !(s > 0) {
			return Config{}, fmt.Errorf("vae config: latents_std must be positive")
		}
	}
	return c, nil
}

func bools(raw string, n int) ([]bool, error) {
	var out []bool
	if raw == "" {
		out = make([]bool, n)
		for i := 1; i < n; i++ {
			out[i] = true
		}
		return out, nil
	}
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		return nil, fmt.Errorf("vae config: temperal_downsample: %w", err)
	}
	if len(out) != n {
		return nil, fmt.Errorf("vae config: temperal_downsample has %d entries, dim_mult needs %d", len(out), n)
	}
	return out, nil
}

// conv is a causal 3-D convolution run on one frame: its last temporal
// kernel slice as a 2-D convolution.
type conv struct {
	w5, b *nn.Weight
	w     *tensor.Tensor
	p     backend.Conv2DParams
}

func newConv(ws *nn.Weights, name string, cin, cout, k int) *conv {
	s := ws.Sub(name)
	kt := k
	return &conv{w5: s.Get("weight", cout, cin, kt, k, k), b: s.Get("bias", cout), p: backend.SymmetricPad(1, k/2)}
}

// slice uploads the last temporal slice of the 3-D kernel.
func (c *conv) slice(be backend.Backend) {
	s := c.w5.Shape
	all := be.ToFloat32(c.w5.T)
	kt, kk := s[2], s[3]*s[4]
	w := make([]float32, s[0]*s[1]*kk)
	for o := range s[0] * s[1] {
		copy(w[o*kk:(o+1)*kk], all[(o*kt+kt-1)*kk:(o*kt+kt)*kk])
	}
	c.w = be.FromFloat32(tensor.Shape{s[0], s[1], s[3], s[4]}, w)
}

func (c *conv) forward(be backend.Backend, x *tensor.Tensor) *tensor.Tensor {
	return be.Conv2D(x, c.w, c.b.T, c.p)
}

// norm is the channel RMS norm: x / ‖x‖ over channels · √C · gamma.
type norm struct{ g *nn.Weight }

func newNorm(ws *nn.Weights, name string, c int) *norm {
	g := ws.Sub(name).Get("gamma", c)
	g.AllowTrailingOnes = true
	return &norm{g: g}
}

func (n *norm) forward(be backend.Backend, ops backend.TransformerOps, x *tensor.Tensor) *tensor.Tensor {
	h, w := x.Dim(2), x.Dim(3)
	t := be.ImageToTokens(x)
	t = nn.Swap(be, t, ops.RMSNorm(t, n.g.T, 0))
	return nn.Swap(be, t, be.TokensToImage(t, h, w))
}

type resBlock struct {
	n1, n2   *norm
	c1, c2   *conv
	shortcut *conv
}

func newResBlock(ws *nn.Weights, in, out int) *resBlock {
	r := &resBlock{n1: newNorm(ws, "norm1", in), c1: newConv(ws, "conv1", in, out, 3),
		n2: newNorm(ws, "norm2", out), c2: newConv(ws, "conv2", out, out, 3)}
	if in != out {
		r.shortcut = newConv(ws, "conv_shortcut", in, out, 1)
	}
	return r
}

func (r *resBlock) convs() []*conv {
	cs := []*conv{r.c1, r.c2}
	if r.shortcut != nil {
		cs = append(cs, r.shortcut)
	}
	return cs
}

func (r *resBlock) forward(be backend.Backend, ops backend.TransformerOps, x *tensor.Tensor) *tensor.Tensor {
	h := r.n1.forward(be, ops, x)
	h = nn.Swap(be, h, be.SiLU(h))
	h = nn.Swap(be, h, r.c1.forward(be, h))
	h = nn.Swap(be, h, r.n2.forward(be, ops, h))
	h = nn.Swap(be, h, be.SiLU(h))
	h = nn.Swap(be, h, r.c2.forward(be, h))
	s := x
	if r.shortcut != nil {
		s = r.shortcut.forward(be, x)
		defer be.Free(s)
	}
	return nn.Swap(be, h, be.Add(h, s))
}

// attnBlock is the mid block's single-head self-attention over pixels.
type attnBlock struct {
	n         *norm
	qkv, proj *nn.Linear
	c         int
}

func newAttn(ws *nn.Weights, c int) *attnBlock {
	a := &attnBlock{n: newNorm(ws, "norm", c), qkv: nn.NewLinear(ws, "to_qkv", c, 3*c, true),
		proj: nn.NewLinear(ws, "proj", c, c, true), c: c}
	a.qkv.W.AllowTrailingOnes, a.proj.W.AllowTrailingOnes = true, true
	return a
}

func (a *attnBlock) forward(be backend.Backend, ops backend.TransformerOps, x *tensor.Tensor) *tensor.Tensor {
	h, w := x.Dim(2), x.Dim(3)
	t := be.ImageToTokens(x)
	t = nn.Swap(be, t, ops.RMSNorm(t, a.n.g.T, 0))
	qkv := nn.Swap(be, t, a.qkv.Forward(be, t))
	q, k, v := ops.Narrow(qkv, 2, 0, a.c), ops.Narrow(qkv, 2, a.c, 2*a.c), ops.Narrow(qkv, 2, 2*a.c, 3*a.c)
	be.Free(qkv)
	o := be.Attention(q, k, v, backend.AttentionParams{Heads: 1, Scale: float32(1 / math.Sqrt(float64(a.c))), Upcast: true})
	be.Free(q, k, v)
	o = nn.Swap(be, o, a.proj.Forward(be, o))
	img := nn.Swap(be, o, be.TokensToImage(o, h, w))
	return nn.Swap(be, img, be.Add(img, x))
}

type midBlock struct {
	r0, r1 *resBlock
	attn   *attnBlock
}

func newMid(ws *nn.Weights, c int) *midBlock {
	return &midBlock{r0: newResBlock(ws.Sub("resnets.0"), c, c), attn: newAttn(ws.Sub("attentions.0"), c),
		r1: newResBlock(ws.Sub("resnets.1"), c, c)}
}

func (m *midBlock) forward(be backend.Backend, ops backend.TransformerOps, x *tensor.Tensor) *tensor.Tensor {
	x = m.r0.forward(be, ops, x)
	x = nn.Swap(be, x, m.attn.forward(be, ops, x))
	return nn.Swap(be, x, m.r1.forward(be, ops, x))
}

// layer is one entry of the encoder's down_blocks or a decoder up block
// step: a residual block or a resampler.
type layer struct {
	res *resBlock
	// resampling: 2-D conv after (up) or with (down) the 2× resize; the
	// temporal conv is declared for the checkpoint and unused on frame 0.
	resample *nn.Conv2D
	up       bool
}

func (l *layer) forward(be backend.Backend, ops backend.TransformerOps, x *tensor.Tensor) *tensor.Tensor {
	if l.res != nil {
		return nn.Swap(be, x, l.res.forward(be, ops, x))
	}
	if l.up {
		x = nn.Swap(be, x, be.UpsampleNearest2x(x))
	}
	return nn.Swap(be, x, l.resample.Forward(be, x))
}

// Model is the autoencoder with its weights on a backend.
type Model struct {
	cfg                  Config
	be                   backend.Backend
	ops                  backend.TransformerOps
	ws                   *nn.Weights
	convs                []*conv
	encIn, encOut, quant *conv
	encLayers            []*layer
	encMid               *midBlock
	encNorm              *norm
	decIn, decOut, post  *conv
	decMid               *midBlock
	decLayers            []*layer
	decNorm              *norm
}

// New declares the weights for cfg, checks them against src and uploads
// them to be.
func New(be backend.Backend, cfg Config, src safetensors.Source) (_ *Model, err error) {
	ops, err := backend.AsTransformer(be)
	if err != nil {
		return nil, fmt.Errorf("wanvae: %w", err)
	}
	m := declareModel(cfg)
	m.be, m.ops = be, ops
	ws := m.ws
	if err := ws.Load(be, src); err != nil {
		return nil, fmt.Errorf("wanvae: %w", err)
	}
	defer backend.Recover(&err)
	for _, c := range m.convs {
		c.slice(be)
	}
	return m, nil
}

// Config returns the model's configuration.
func (m *Model) Config() Config { return m.cfg }

// Weights returns the declared weights.
func (m *Model) Weights() *nn.Weights { return m.ws }

// Encode encodes images (N, C, H, W) in [-1, 1] (one frame each) to the
// posterior's mean and log-variance (N, z, H/f, W/f), the log-variance
// clamped to [-30, 20] as diffusers' DiagonalGaussianDistribution does.
func (m *Model) Encode(ctx context.Context, pixels []float32, shape [4]int) (mean, logvar []float32, latent [4]int, err error) {
	defer backend.Recover(&err)
	f := m.cfg.Factor()
	n, c, h, w := shape[0], shape[1], shape[2], shape[3]
	if c != m.cfg.InputChannels || h%f != 0 || w%f != 0 || h < f || w < f || len(pixels) != n*c*h*w {
		return nil, nil, latent, fmt.Errorf("wanvae: encode: image %v: want %d channels and sides divisible by %d", shape, m.cfg.InputChannels, f)
	}
	be, ops := m.be, m.ops
	x := be.FromFloat32(tensor.Shape{n, c, h, w}, pixels)
	x = nn.Swap(be, x, m.encIn.forward(be, x))
	for _, l := range m.encLayers {
		if err := ctx.Err(); err != nil {
			be.Free(x)
			return nil, nil, latent, fmt.Errorf("wanvae: encode: %w", err)
		}
		x = l.forward(be, ops, x)
	}
	x = nn.Swap(be, x, m.encMid.forward(be, ops, x))
	x = nn.Swap(be, x, m.encNorm.forward(be, ops, x))
	x = nn.Swap(be, x, be.SiLU(x))
	x = nn.Swap(be, x, m.encOut.forward(be, x))
	x = nn.Swap(be, x, m.quant.forward(be, x))
	all := be.ToFloat32(x)
	be.Free(x)
	z, lh, lw := m.cfg.ZDim, h/f, w/f
	plane := z * lh * lw
	mean, logvar = make([]float32, 0, n*plane), make([]float32, 0, n*plane)
	for i := range n {
		mean = append(mean, all[2*i*plane:(2*i+1)*plane]...)
		for _, v := range all[(2*i+1)*plane : (2*i+2)*plane] {
			logvar = append(logvar, min(max(v, -30), 20))
		}
	}
	return mean, logvar, [4]int{n, z, lh, lw}, nil
}

// Decode decodes latents (N, z, h, w) in the VAE's own scale (see
// Denormalize) to images (N, C, h·f, w·f) clamped to [-1, 1]; with clamp
// false the raw decoder output is returned.
func (m *Model) Decode(ctx context.Context, latents []float32, shape [4]int, clamp bool) (pixels []float32, out [4]int, err error) {
	defer backend.Recover(&err)
	n, z, h, w := shape[0], shape[1], shape[2], shape[3]
	if z != m.cfg.ZDim || h < 1 || w < 1 || len(latents) != n*z*h*w {
		return nil, out, fmt.Errorf("wanvae: decode: latents %v: want %d channels", shape, m.cfg.ZDim)
	}
	be, ops := m.be, m.ops
	x := be.FromFloat32(tensor.Shape{n, z, h, w}, latents)
	x = nn.Swap(be, x, m.post.forward(be, x))
	x = nn.Swap(be, x, m.decIn.forward(be, x))
	x = nn.Swap(be, x, m.decMid.forward(be, ops, x))
	for _, l := range m.decLayers {
		if err := ctx.Err(); err != nil {
			be.Free(x)
			return nil, out, fmt.Errorf("wanvae: decode: %w", err)
		}
		x = l.forward(be, ops, x)
	}
	x = nn.Swap(be, x, m.decNorm.forward(be, ops, x))
	x = nn.Swap(be, x, be.SiLU(x))
	x = nn.Swap(be, x, m.decOut.forward(be, x))
	out = [4]int{n, m.cfg.InputChannels, x.Dim(2), x.Dim(3)}
	pixels = be.ToFloat32(x)
	be.Free(x)
	if clamp {
		for i, v := range pixels {
			pixels[i] = min(max(v, -1), 1)
		}
	}
	return pixels, out, nil
}

// Normalize maps VAE latents (N, z, h, w) to the denoiser's scale in
// place: (x − mean_c) / std_c.
func (c Config) Normalize(x []float32, shape [4]int) {
	c.perChannel(x, shape, func(v float32, mean, std float64) float32 { return float32((float64(v) - mean) / std) })
}

// Denormalize is the inverse of Normalize: x · std_c + mean_c.
func (c Config) Denormalize(x []float32, shape [4]int) {
	c.perChannel(x, shape, func(v float32, mean, std float64) float32 { return float32(float64(v)*std + mean) })
}

func (c Config) perChannel(x []float32, shape [4]int, f func(v float32, mean, std float64) float32) {
	plane := shape[2] * shape[3]
	for n := range shape[0] {
		for ch := range shape[1] {
			s := x[(n*shape[1]+ch)*plane : (n*shape[1]+ch+1)*plane]
			for i, v := range s {
				s[i] = f(v, c.LatentsMean[ch], c.LatentsStd[ch])
			}
		}
	}
}

// declareModel declares the weights of cfg (no backend yet).
func declareModel(cfg Config) *Model {
	ws := nn.NewWeights()
	m := &Model{cfg: cfg, ws: ws}
	track := func(cs ...*conv) {
		m.convs = append(m.convs, cs...)
	}
	res := func(s *nn.Weights, in, out int) *resBlock {
		r := newResBlock(s, in, out)
		track(r.convs()...)
		return r
	}
	mid := func(s *nn.Weights, c int) *midBlock {
		b := newMid(s, c)
		track(b.r0.convs()...)
		track(b.r1.convs()...)
		return b
	}
	d := cfg.BaseDim
	dims := []int{d}
	for _, u := range cfg.DimMult {
		dims = append(dims, d*u)
	}
	// Encoder.
	enc := ws.Sub("encoder")
	m.encIn = newConv(enc, "conv_in", cfg.InputChannels, dims[0], 3)
	track(m.encIn)
	idx := 0
	var out int
	for i := range cfg.DimMult {
		in := dims[i]
		out = dims[i+1]
		for range cfg.NumResBlocks {
			m.encLayers = append(m.encLayers, &layer{res: res(enc.Subf("down_blocks.%d", idx), in, out)})
			idx++
			in = out
		}
		if i != len(cfg.DimMult)-1 {
			s := enc.Subf("down_blocks.%d", idx)
			l := &layer{resample: nn.NewConv2D(s.Sub("resample"), "1", out, out, 3, backend.Conv2DParams{Stride: 2, PadBottom: 1, PadRight: 1})}
			if cfg.TemporalDownsample[i] {
				t := s.Sub("time_conv")
				t.Get("weight", out, out, 3, 1, 1)
				t.Get("bias", out)
			}
			m.encLayers = append(m.encLayers, l)
			idx++
		}
	}
	m.encMid = mid(enc.Sub("mid_block"), out)
	m.encNorm = newNorm(enc, "norm_out", out)
	m.encOut = newConv(enc, "conv_out", out, 2*cfg.ZDim, 3)
	m.quant = newConv(ws, "quant_conv", 2*cfg.ZDim, 2*cfg.ZDim, 1)
	m.post = newConv(ws, "post_quant_conv", cfg.ZDim, cfg.ZDim, 1)
	track(m.encOut, m.quant, m.post)
	// Decoder.
	dec := ws.Sub("decoder")
	n := len(cfg.DimMult)
	ddims := []int{d * cfg.DimMult[n-1]}
	for i := n - 1; i >= 0; i-- {
		ddims = append(ddims, d*cfg.DimMult[i])
	}
	m.decIn = newConv(dec, "conv_in", cfg.ZDim, ddims[0], 3)
	track(m.decIn)
	m.decMid = mid(dec.Sub("mid_block"), ddims[0])
	for i := range n {
		in, o := ddims[i], ddims[i+1]
		if i > 0 {
			in /= 2
		}
		s := dec.Subf("up_blocks.%d", i)
		for j := range cfg.NumResBlocks + 1 {
			m.decLayers = append(m.decLayers, &layer{res: res(s.Subf("resnets.%d", j), in, o)})
			in = o
		}
		out = o
		if i != n-1 {
			u := s.Sub("upsamplers.0")
			l := &layer{up: true, resample: nn.NewConv2D(u.Sub("resample"), "1", o, o/2, 3, backend.SymmetricPad(1, 1))}
			if cfg.TemporalDownsample[n-2-i] {
				t := u.Sub("time_conv")
				t.Get("weight", 2*o, o, 3, 1, 1)
				t.Get("bias", 2*o)
			}
			m.decLayers = append(m.decLayers, l)
		}
	}
	m.decNorm = newNorm(dec, "norm_out", out)
	m.decOut = newConv(dec, "conv_out", out, cfg.InputChannels, 3)
	track(m.decOut)
	return m
}

// WeightInfos lists the tensors (names, shapes; dtype F32) a checkpoint
// of cfg holds, for a synthetic random-weight model.
func WeightInfos(cfg Config) []safetensors.TensorInfo { return declareModel(cfg).ws.Infos() }
