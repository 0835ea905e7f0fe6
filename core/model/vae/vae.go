// Package vae implements diffusers' AutoencoderKL on the backend
// interface: the encoder (image → posterior mean and log-variance) and the
// decoder (latent → image), built from vae/config.json with any number of
// levels, plus an exact tiled decoder for large images (tiled.go). Weight
// names are diffusers' (encoder.down_blocks.0.resnets.0.conv1.weight, …);
// the older attention names (query, key, value, proj_attn) are accepted.
package vae

import (
	"context"
	"fmt"
	"math"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/model/nn"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
)

// The resnets and attention of the VAE use this epsilon everywhere.
const eps = 1e-6

// Model is an AutoencoderKL with its weights on a backend. Like the backend
// it computes on, it is not safe for concurrent use.
type Model struct {
	be      backend.Backend
	cfg     Config
	weights *nn.Weights

	enc           *encoder
	dec           *decoder
	quantConv     *nn.Conv2D // nil unless UseQuantConv
	postQuantConv *nn.Conv2D // nil unless UsePostQuantConv
}

type encoder struct {
	convIn  *nn.Conv2D
	down    []*level
	mid     *midBlock
	normOut *nn.GroupNorm
	convOut *nn.Conv2D
}

type decoder struct {
	convIn  *nn.Conv2D
	mid     *midBlock
	up      []*level
	normOut *nn.GroupNorm
	convOut *nn.Conv2D
}

// level is DownEncoderBlock2D (resample = stride-2 conv after (0,1,0,1)
// padding) or UpDecoderBlock2D (resample = nearest 2× then conv).
type level struct {
	resnets  []*nn.Resnet
	resample *nn.Conv2D // nil in the last block
}

// midBlock is UNetMidBlock2D: resnet, single-head attention, resnet.
type midBlock struct {
	resnet1, resnet2 *nn.Resnet
	attn             *selfAttention // nil without mid_block_add_attention
}

// selfAttention is the VAE's single-head spatial attention with a group
// norm in front and the input added back.
type selfAttention struct {
	norm         *nn.GroupNorm
	q, k, v, out *nn.Linear
	params       backend.AttentionParams
}

// New builds the autoencoder described by cfg with the weights of src
// (tensors named as in a diffusers vae folder), checking every weight
// before uploading any.
func New(be backend.Backend, cfg Config, src safetensors.Source) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := build(cfg)
	if err := m.weights.Load(be, src); err != nil {
		return nil, fmt.Errorf("vae: %w", err)
	}
	m.be = be
	return m, nil
}

// ExpectedTensors lists the name and shape of every tensor a checkpoint of
// this architecture holds, in module order (dtype reported as F32).
func ExpectedTensors(cfg Config) ([]safetensors.TensorInfo, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return build(cfg).weights.Infos(), nil
}

// Config returns the autoencoder's configuration.
func (m *Model) Config() Config { return m.cfg }

// Factor returns the spatial downsampling factor (8 for SD, 4 for the
// test fixture).
func (m *Model) Factor() int { return m.cfg.Factor() }

func build(cfg Config) *Model {
	ws := nn.NewWeights()
	m := &Model{cfg: cfg, weights: ws}
	ch := cfg.BlockOutChannels
	n := len(ch)
	g := cfg.NormGroups

	e := &encoder{}
	ew := ws.Sub("encoder")
	e.convIn = nn.NewConv2D(ew, "conv_in", cfg.InChannels, ch[0], 3, backend.SymmetricPad(1, 1))
	out := ch[0]
	for i := range n {
		in := out
		out = ch[i]
		bw := ew.Subf("down_blocks.%d", i)
		l := &level{}
		for j := range cfg.LayersPerBlock {
			rin := out
			if j == 0 {
				rin = in
			}
			l.resnets = append(l.resnets, nn.NewResnet(bw.Subf("resnets.%d", j), rin, out, 0, g, eps))
		}
		if i < n-1 {
			// diffusers' Downsample2D with padding 0 pads (0, 1, 0, 1) itself.
			p := backend.Conv2DParams{Stride: 2, PadBottom: 1, PadRight: 1}
			l.resample = nn.NewConv2D(bw, "downsamplers.0.conv", out, out, 3, p)
		}
		e.down = append(e.down, l)
	}
	e.mid = newMidBlock(ew.Sub("mid_block"), cfg, ch[n-1])
	e.normOut = nn.NewGroupNorm(ew, "conv_norm_out", g, ch[n-1], eps)
	e.convOut = nn.NewConv2D(ew, "conv_out", ch[n-1], 2*cfg.LatentChannels, 3, backend.SymmetricPad(1, 1))
	m.enc = e

	if cfg.UseQuantConv {
		m.quantConv = nn.NewConv2D(ws, "quant_conv", 2*cfg.LatentChannels, 2*cfg.LatentChannels, 1, backend.SymmetricPad(1, 0))
	}
	if cfg.UsePostQuantConv {
		m.postQuantConv = nn.NewConv2D(ws, "post_quant_conv", cfg.LatentChannels, cfg.LatentChannels, 1, backend.SymmetricPad(1, 0))
	}

	d := &decoder{}
	dw := ws.Sub("decoder")
	d.convIn = nn.NewConv2D(dw, "conv_in", cfg.LatentChannels, ch[n-1], 3, backend.SymmetricPad(1, 1))
	d.mid = newMidBlock(dw.Sub("mid_block"), cfg, ch[n-1])
	out = ch[n-1]
	for i := range n {
		in := out
		out = ch[n-1-i]
		bw := dw.Subf("up_blocks.%d", i)
		l := &level{}
		for j := range cfg.LayersPerBlock + 1 {
			rin := out
			if j == 0 {
				rin = in
			}
			l.resnets = append(l.resnets, nn.NewResnet(bw.Subf("resnets.%d", j), rin, out, 0, g, eps))
		}
		if i < n-1 {
			l.resample = nn.NewConv2D(bw, "upsamplers.0.conv", out, out, 3, backend.SymmetricPad(1, 1))
		}
		d.up = append(d.up, l)
	}
	d.normOut = nn.NewGroupNorm(dw, "conv_norm_out", g, ch[0], eps)
	d.convOut = nn.NewConv2D(dw, "conv_out", ch[0], cfg.OutChannels, 3, backend.SymmetricPad(1, 1))
	m.dec = d
	return m
}

func newMidBlock(ws *nn.Weights, cfg Config, c int) *midBlock {
	mb := &midBlock{resnet1: nn.NewResnet(ws.Sub("resnets.0"), c, c, 0, cfg.NormGroups, eps)}
	if cfg.MidBlockAttention {
		aw := ws.Sub("attentions.0")
		a := &selfAttention{
			norm:   nn.NewGroupNorm(aw, "group_norm", cfg.NormGroups, c, eps),
			q:      legacyLinear(aw, "to_q", "query", c),
			k:      legacyLinear(aw, "to_k", "key", c),
			v:      legacyLinear(aw, "to_v", "value", c),
			out:    legacyLinear(aw, "to_out.0", "proj_attn", c),
			params: backend.AttentionParams{Heads: 1, Scale: float32(1 / math.Sqrt(float64(c))), Upcast: true},
		}
		mb.attn = a
	}
	mb.resnet2 = nn.NewResnet(ws.Sub("resnets.1"), c, c, 0, cfg.NormGroups, eps)
	return mb
}

// legacyLinear declares a c→c linear layer that older diffusers files (and
// conversions of the original checkpoints) store under another name, and
// possibly as a 1×1 convolution weight.
func legacyLinear(ws *nn.Weights, name, legacy string, c int) *nn.Linear {
	l := nn.NewLinear(ws, name, c, c, true)
	prefix := l.W.Name[:len(l.W.Name)-len(name+".weight")]
	l.W.Legacy = []string{prefix + legacy + ".weight"}
	l.B.Legacy = []string{prefix + legacy + ".bias"}
	l.W.AllowTrailingOnes = true
	return l
}

func (mb *midBlock) forward(be backend.Backend, x *tensor.Tensor) *tensor.Tensor {
	h := mb.resnet1.Forward(be, x, nil)
	if mb.attn != nil {
		h = nn.Swap(be, h, mb.attn.forward(be, h))
	}
	return nn.Swap(be, h, mb.resnet2.Forward(be, h, nil))
}

// forward returns x + out(attention(norm(x))) for x (B, C, H, W).
func (a *selfAttention) forward(be backend.Backend, x *tensor.Tensor) *tensor.Tensor {
	h, w := x.Dim(2), x.Dim(3)
	n := a.norm.Forward(be, x, false)
	t := nn.Swap(be, n, be.ImageToTokens(n))
	q, k, v := a.q.Forward(be, t), a.k.Forward(be, t), a.v.Forward(be, t)
	be.Free(t)
	o := be.Attention(q, k, v, a.params)
	be.Free(q, k, v)
	o = nn.Swap(be, o, a.out.Forward(be, o))
	o = nn.Swap(be, o, be.TokensToImage(o, h, w))
	return nn.Swap(be, o, be.Add(o, x))
}

func checkShape(what string, data []float32, shape [4]int, channels int) error {
	if shape[0] < 1 || shape[2] < 1 || shape[3] < 1 || shape[1] != channels {
		return fmt.Errorf("vae: %s shape %v: want (B, %d, H, W) with B, H, W ≥ 1", what, shape, channels)
	}
	if n := shape[0] * shape[1] * shape[2] * shape[3]; len(data) != n {
		return fmt.Errorf("vae: %s holds %d values, shape %v needs %d", what, len(data), shape, n)
	}
	return nil
}

// Encode maps images (B, InChannels, H, W) in [-1, 1] to the parameters of
// the latent posterior: mean and log-variance (clamped to [-30, 20] as
// diffusers does), each (B, LatentChannels, h, w) with h = ceil-ish H /
// Factor (exactly H/Factor when H divides by it). No scaling is applied.
func (m *Model) Encode(ctx context.Context, img []float32, shape [4]int) (mean, logvar []float32, latShape [4]int, err error) {
	defer backend.Recover(&err)
	if err := checkShape("image", img, shape, m.cfg.InChannels); err != nil {
		return nil, nil, latShape, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, latShape, err
	}
	be := m.be
	e := m.enc
	x := be.FromFloat32(tensor.Shape(shape[:]), img)
	h := nn.Swap(be, x, e.convIn.Forward(be, x))
	for _, l := range e.down {
		if err := ctx.Err(); err != nil {
			be.Free(h)
			return nil, nil, latShape, err
		}
		for _, r := range l.resnets {
			h = nn.Swap(be, h, r.Forward(be, h, nil))
		}
		if l.resample != nil {
			h = nn.Swap(be, h, l.resample.Forward(be, h))
		}
	}
	if err := ctx.Err(); err != nil {
		be.Free(h)
		return nil, nil, latShape, err
	}
	mean, logvar, latShape = m.encodeLow(h)
	return mean, logvar, latShape, nil
}

// encodeLow runs the encoder's latent-resolution part on h (which it
// frees) — the mid block, the output norm and convolution and quant_conv —
// and splits the moments into the posterior's mean and log-variance
// (clamped to [-30, 20]).
func (m *Model) encodeLow(h *tensor.Tensor) (mean, logvar []float32, latShape [4]int) {
	be, e := m.be, m.enc
	h = nn.Swap(be, h, e.mid.forward(be, h))
	h = nn.Swap(be, h, e.normOut.Forward(be, h, true))
	h = nn.Swap(be, h, e.convOut.Forward(be, h))
	if m.quantConv != nil {
		h = nn.Swap(be, h, m.quantConv.Forward(be, h))
	}
	moments := be.ToFloat32(h)
	hs := h.Shape()
	be.Free(h)

	lc := m.cfg.LatentChannels
	bn, hw := hs[0], hs[2]*hs[3]
	latShape = [4]int{bn, lc, hs[2], hs[3]}
	mean = make([]float32, bn*lc*hw)
	logvar = make([]float32, bn*lc*hw)
	for b := range bn {
		src := moments[b*2*lc*hw : (b+1)*2*lc*hw]
		copy(mean[b*lc*hw:(b+1)*lc*hw], src[:lc*hw])
		lv := logvar[b*lc*hw : (b+1)*lc*hw]
		for i, v := range src[lc*hw:] {
			lv[i] = min(max(v, -30), 20)
		}
	}
	return mean, logvar, latShape
}

// Decode maps latents (B, LatentChannels, h, w) — already divided by the
// scaling factor, see Config.Denormalize — to images (B, OutChannels,
// h·Factor, w·Factor), nominally in [-1, 1] (not clamped).
func (m *Model) Decode(ctx context.Context, latents []float32, shape [4]int) (img []float32, imgShape [4]int, err error) {
	defer backend.Recover(&err)
	if err := checkShape("latents", latents, shape, m.cfg.LatentChannels); err != nil {
		return nil, imgShape, err
	}
	if err := ctx.Err(); err != nil {
		return nil, imgShape, err
	}
	be := m.be
	h := m.decodeLow(latents, shape)
	for _, l := range m.dec.up {
		if err := ctx.Err(); err != nil {
			be.Free(h)
			return nil, imgShape, err
		}
		for _, r := range l.resnets {
			h = nn.Swap(be, h, r.Forward(be, h, nil))
		}
		if l.resample != nil {
			h = nn.Swap(be, h, be.UpsampleNearest2x(h))
			h = nn.Swap(be, h, l.resample.Forward(be, h))
		}
	}
	h = nn.Swap(be, h, m.dec.normOut.Forward(be, h, true))
	h = nn.Swap(be, h, m.dec.convOut.Forward(be, h))
	img = be.ToFloat32(h)
	hs := h.Shape()
	be.Free(h)
	return img, [4]int{hs[0], hs[1], hs[2], hs[3]}, nil
}

// decodeLow runs the decoder's latent-resolution part: post_quant_conv,
// conv_in and the mid block.
func (m *Model) decodeLow(latents []float32, shape [4]int) *tensor.Tensor {
	be := m.be
	h := be.FromFloat32(tensor.Shape(shape[:]), latents)
	if m.postQuantConv != nil {
		h = nn.Swap(be, h, m.postQuantConv.Forward(be, h))
	}
	h = nn.Swap(be, h, m.dec.convIn.Forward(be, h))
	return nn.Swap(be, h, m.dec.mid.forward(be, h))
}
