// Package unet implements diffusers' UNet2DConditionModel, the noise
// predictor of Stable Diffusion 1.x, 2.x and SDXL (added text_time
// conditioning), on the backend interface. The
// architecture comes from unet/config.json (see ParseConfig); module and
// weight names are exactly diffusers' (down_blocks.0.resnets.0.norm1.weight,
// …), and every weight's shape is checked against the config before any
// compute.
package unet

import (
	"context"
	"fmt"
	"math"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/model/nn"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
)

// Model is a UNet2DConditionModel with its weights on a backend. Like the
// backend it computes on, it is not safe for concurrent use.
type Model struct {
	be      backend.Backend
	cfg     Config
	weights *nn.Weights

	convIn      *nn.Conv2D
	timeLinear1 *nn.Linear
	timeLinear2 *nn.Linear
	// addLinear1 and addLinear2 embed the added text_time conditioning
	// (nil without addition_embed_type).
	addLinear1, addLinear2 *nn.Linear
	down                   []*downBlock
	mid                    *midBlock // nil when the config has no mid block
	up                     []*upBlock
	convNormOut            *nn.GroupNorm
	convOut                *nn.Conv2D
}

// downBlock is DownBlock2D (attns nil) or CrossAttnDownBlock2D.
type downBlock struct {
	resnets     []*nn.Resnet
	attns       []*transformer2D
	downsampler *nn.Conv2D // nil in the last block
}

// midBlock is UNetMidBlock2DCrossAttn: resnet, then (attention, resnet)
// pairs.
type midBlock struct {
	resnets []*nn.Resnet
	attns   []*transformer2D
}

// upBlock is UpBlock2D (attns nil) or CrossAttnUpBlock2D.
type upBlock struct {
	resnets   []*nn.Resnet
	attns     []*transformer2D
	upsampler *nn.Conv2D // nil in the last block
}

// New builds the model described by cfg with the weights of src (tensors
// named as in a diffusers unet folder). All weights are checked before any
// is uploaded: a missing tensor, a wrong shape or a tensor the config does
// not use is an error naming it.
func New(be backend.Backend, cfg Config, src safetensors.Source) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := build(cfg)
	if err := m.weights.Load(be, src); err != nil {
		return nil, fmt.Errorf("unet: %w", err)
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

// Config returns the model's architecture.
func (m *Model) Config() Config { return m.cfg }

// Params returns the number of parameters.
func (m *Model) Params() int64 { return m.weights.Params() }

// build declares every module and weight of the architecture.
func build(cfg Config) *Model {
	ws := nn.NewWeights()
	m := &Model{cfg: cfg, weights: ws}
	ch := cfg.BlockOutChannels
	n := len(ch)
	temb := cfg.TimeEmbedDim
	eps := cfg.NormEps
	groups := cfg.NormGroups

	m.convIn = nn.NewConv2D(ws, "conv_in", cfg.InChannels, ch[0], 3, backend.SymmetricPad(1, 1))
	m.timeLinear1 = nn.NewLinear(ws, "time_embedding.linear_1", ch[0], temb, true)
	m.timeLinear2 = nn.NewLinear(ws, "time_embedding.linear_2", temb, temb, true)
	if cfg.AdditionEmbedType == AdditionTextTime {
		m.addLinear1 = nn.NewLinear(ws, "add_embedding.linear_1", cfg.AddEmbedInputDim, temb, true)
		m.addLinear2 = nn.NewLinear(ws, "add_embedding.linear_2", temb, temb, true)
	}

	out := ch[0]
	for i, typ := range cfg.DownBlockTypes {
		in := out
		out = ch[i]
		bw := ws.Subf("down_blocks.%d", i)
		b := &downBlock{}
		for j := range cfg.LayersPerBlock[i] {
			rin := out
			if j == 0 {
				rin = in
			}
			b.resnets = append(b.resnets, nn.NewResnet(bw.Subf("resnets.%d", j), rin, out, temb, groups, eps))
			if typ == CrossAttnDownBlock2D {
				b.attns = append(b.attns, newTransformer2D(bw.Subf("attentions.%d", j), cfg, out, i))
			}
		}
		if i < n-1 {
			p := backend.SymmetricPad(2, cfg.DownsamplePadding)
			if cfg.DownsamplePadding == 0 { // diffusers pads (0, 1, 0, 1) itself
				p = backend.Conv2DParams{Stride: 2, PadBottom: 1, PadRight: 1}
			}
			b.downsampler = nn.NewConv2D(bw, "downsamplers.0.conv", out, out, 3, p)
		}
		m.down = append(m.down, b)
	}

	if cfg.MidBlockType != "" {
		last := ch[n-1]
		mw := ws.Sub("mid_block")
		mb := &midBlock{}
		mb.resnets = append(mb.resnets, nn.NewResnet(mw.Sub("resnets.0"), last, last, temb, groups, eps))
		mb.attns = append(mb.attns, newTransformer2D(mw.Sub("attentions.0"), cfg, last, n-1))
		mb.resnets = append(mb.resnets, nn.NewResnet(mw.Sub("resnets.1"), last, last, temb, groups, eps))
		m.mid = mb
	}

	out = ch[n-1]
	for i, typ := range cfg.UpBlockTypes {
		lvl := n - 1 - i // the down level this up block mirrors
		prev := out
		out = ch[lvl]
		in := ch[max(lvl-1, 0)]
		layers := cfg.LayersPerBlock[lvl] + 1
		bw := ws.Subf("up_blocks.%d", i)
		b := &upBlock{}
		for j := range layers {
			skip := out
			if j == layers-1 {
				skip = in
			}
			rin := out
			if j == 0 {
				rin = prev
			}
			b.resnets = append(b.resnets, nn.NewResnet(bw.Subf("resnets.%d", j), rin+skip, out, temb, groups, eps))
			if typ == CrossAttnUpBlock2D {
				b.attns = append(b.attns, newTransformer2D(bw.Subf("attentions.%d", j), cfg, out, lvl))
			}
		}
		if i < n-1 {
			b.upsampler = nn.NewConv2D(bw, "upsamplers.0.conv", out, out, 3, backend.SymmetricPad(1, 1))
		}
		m.up = append(m.up, b)
	}

	m.convNormOut = nn.NewGroupNorm(ws, "conv_norm_out", groups, ch[0], eps)
	m.convOut = nn.NewConv2D(ws, "conv_out", ch[0], cfg.OutChannels, 3, backend.SymmetricPad(1, 1))
	return m
}

// Forward predicts the model output (noise, or v) for sample (B, C, H, W)
// at per-sample timesteps (len B, or len 1 for the whole batch), attending
// to context (B, ctxLen, ContextDim). H and W may be any size, as in
// diffusers; sizes that divide by Config().Factor() avoid a round trip to
// the host at each upsampling. It returns a new slice of the sample's shape.
func (m *Model) Forward(ctx context.Context, sample []float32, shape [4]int, timesteps []float32, context []float32, ctxLen int) (out []float32, err error) {
	return m.ForwardAdded(ctx, sample, shape, timesteps, context, ctxLen, nil)
}

// Added is the added conditioning of a text_time UNet (SDXL), one row per
// sample: TextEmbeds (B × pooled text width) and TimeIDs (B × count, see
// Config.TimeIDCount).
type Added struct {
	TextEmbeds []float32
	TimeIDs    []float32
}

// ForwardAdded is Forward for models with added conditioning: added must be
// set exactly when the config has an addition_embed_type.
func (m *Model) ForwardAdded(ctx context.Context, sample []float32, shape [4]int, timesteps []float32, context []float32, ctxLen int, added *Added) (out []float32, err error) {
	defer backend.Recover(&err)
	cfg := &m.cfg
	bn, c, h, w := shape[0], shape[1], shape[2], shape[3]
	if bn < 1 || h < 1 || w < 1 || c != cfg.InChannels {
		return nil, fmt.Errorf("unet: sample shape %v: want (B, %d, H, W) with B, H, W ≥ 1", shape, cfg.InChannels)
	}
	if f := cfg.Factor(); cfg.DownsamplePadding == 0 && (h%f != 0 || w%f != 0) {
		return nil, fmt.Errorf("unet: sample %d×%d: with downsample_padding 0, height and width must be multiples of %d", h, w, f)
	}
	if len(sample) != bn*c*h*w {
		return nil, fmt.Errorf("unet: sample holds %d values, shape %v needs %d", len(sample), shape, bn*c*h*w)
	}
	ts, err := expandTimesteps(timesteps, bn)
	if err != nil {
		return nil, err
	}
	d := cfg.ContextDim()
	if ctxLen < 1 || len(context) != bn*ctxLen*d {
		return nil, fmt.Errorf("unet: context holds %d values, want batch %d × length %d (≥ 1) × width %d", len(context), bn, ctxLen, d)
	}
	addIn, err := m.addedInput(added, bn)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	be := m.be
	cond := be.FromFloat32(tensor.Shape{bn, ctxLen, d}, context)
	tembAct := m.timeEmbedding(ts, addIn)
	defer be.Free(cond, tembAct)

	x := be.FromFloat32(tensor.Shape(shape[:]), sample)
	hs := nn.Swap(be, x, m.convIn.Forward(be, x))
	skips := []*tensor.Tensor{hs}
	defer func() { be.Free(skips...) }()

	for _, b := range m.down {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for j, r := range b.resnets {
			hs = r.Forward(be, hs, tembAct)
			if b.attns != nil {
				hs = nn.Swap(be, hs, b.attns[j].forward(be, hs, cond))
			}
			skips = append(skips, hs)
		}
		if b.downsampler != nil {
			hs = b.downsampler.Forward(be, hs)
			skips = append(skips, hs)
		}
	}
	// hs is the last skip: the mid block must not free it.
	if m.mid != nil {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hs = m.mid.resnets[0].Forward(be, hs, tembAct)
		for j, a := range m.mid.attns {
			hs = nn.Swap(be, hs, a.forward(be, hs, cond))
			hs = nn.Swap(be, hs, m.mid.resnets[j+1].Forward(be, hs, tembAct))
		}
	} else {
		hs = be.Scale(hs, 1) // a private copy, so that freeing it spares the skip
	}

	for _, b := range m.up {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for j, r := range b.resnets {
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			cat := be.ConcatChannels(hs, skip)
			be.Free(hs, skip)
			hs = nn.Swap(be, cat, r.Forward(be, cat, tembAct))
			if b.attns != nil {
				hs = nn.Swap(be, hs, b.attns[j].forward(be, hs, cond))
			}
		}
		if b.upsampler != nil {
			hs = nn.Swap(be, hs, be.UpsampleNearest2x(hs))
			// A level of odd size s was downsampled to (s+1)/2; nearest
			// upsampling to s (diffusers' forward_upsample_size) is the 2×
			// upsampling without its last row or column.
			if next := skips[len(skips)-1]; hs.Dim(2) != next.Dim(2) || hs.Dim(3) != next.Dim(3) {
				hs = nn.Swap(be, hs, cropOnHost(be, hs, next.Dim(2), next.Dim(3)))
			}
			hs = nn.Swap(be, hs, b.upsampler.Forward(be, hs))
		}
	}
	if err := ctx.Err(); err != nil {
		be.Free(hs)
		return nil, err
	}
	hs = nn.Swap(be, hs, m.convNormOut.Forward(be, hs, true))
	hs = nn.Swap(be, hs, m.convOut.Forward(be, hs))
	out = be.ToFloat32(hs)
	be.Free(hs)
	return out, nil
}

func expandTimesteps(ts []float32, bn int) ([]float32, error) {
	switch len(ts) {
	case bn:
	case 1:
		one := ts[0]
		ts = make([]float32, bn)
		for i := range ts {
			ts[i] = one
		}
	default:
		return nil, fmt.Errorf("unet: %d timesteps for a batch of %d (want %d, or 1 for all)", len(ts), bn, bn)
	}
	for i, t := range ts {
		if math.IsNaN(float64(t)) || math.IsInf(float64(t), 0) {
			return nil, fmt.Errorf("unet: timestep %d is %v", i, t)
		}
	}
	return ts, nil
}

// addedInput checks the added conditioning against the config and lays
// out the added embedding's input on the host: per sample, the pooled text
// embedding followed by the sinusoid of each time id (diffusers'
// add_time_proj over the flattened ids, reshaped per sample). It returns
// nil for models without added conditioning.
func (m *Model) addedInput(added *Added, bn int) ([]float32, error) {
	cfg := &m.cfg
	if cfg.AdditionEmbedType == "" {
		if added != nil {
			return nil, fmt.Errorf("unet: added conditioning given, but the model has no addition_embed_type")
		}
		return nil, nil
	}
	if added == nil {
		return nil, fmt.Errorf("unet: the model (addition_embed_type %s) needs pooled text embeddings and time ids", cfg.AdditionEmbedType)
	}
	if len(added.TextEmbeds) == 0 || len(added.TextEmbeds)%bn != 0 || len(added.TimeIDs)%bn != 0 {
		return nil, fmt.Errorf("unet: %d text-embedding values and %d time ids do not split into %d samples", len(added.TextEmbeds), len(added.TimeIDs), bn)
	}
	textDim, ids := len(added.TextEmbeds)/bn, len(added.TimeIDs)/bn
	if textDim+ids*cfg.AdditionTimeEmbedDim != cfg.AddEmbedInputDim {
		return nil, fmt.Errorf("unet: pooled text of width %d plus %d time ids × %d is not projection_class_embeddings_input_dim %d",
			textDim, ids, cfg.AdditionTimeEmbedDim, cfg.AddEmbedInputDim)
	}
	for i, v := range added.TimeIDs {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("unet: time id %d is %v", i, v)
		}
	}
	sin := Sinusoidal(added.TimeIDs, cfg.AdditionTimeEmbedDim, cfg.FlipSinToCos, cfg.FreqShift)
	width := cfg.AddEmbedInputDim
	in := make([]float32, bn*width)
	for b := range bn {
		row := in[b*width : (b+1)*width]
		copy(row, added.TextEmbeds[b*textDim:(b+1)*textDim])
		copy(row[textDim:], sin[b*ids*cfg.AdditionTimeEmbedDim:(b+1)*ids*cfg.AdditionTimeEmbedDim])
	}
	return in, nil
}

// timeEmbedding returns SiLU(MLP(sinusoid(t)) + MLP_add(addIn))
// (B, TimeEmbedDim): the activated embedding every ResNet projects; the
// added term is present only for models with added conditioning.
func (m *Model) timeEmbedding(ts []float32, addIn []float32) *tensor.Tensor {
	be := m.be
	dim := m.cfg.BlockOutChannels[0]
	sin := Sinusoidal(ts, dim, m.cfg.FlipSinToCos, m.cfg.FreqShift)
	t := be.FromFloat32(tensor.Shape{len(ts), dim}, sin)
	t = nn.Swap(be, t, m.timeLinear1.Forward(be, t))
	t = nn.Swap(be, t, be.SiLU(t))
	t = nn.Swap(be, t, m.timeLinear2.Forward(be, t))
	if m.addLinear1 != nil {
		a := be.FromFloat32(tensor.Shape{len(ts), m.cfg.AddEmbedInputDim}, addIn)
		a = nn.Swap(be, a, m.addLinear1.Forward(be, a))
		a = nn.Swap(be, a, be.SiLU(a))
		a = nn.Swap(be, a, m.addLinear2.Forward(be, a))
		t = nn.Swap(be, t, be.Add(t, a))
		be.Free(a)
	}
	return nn.Swap(be, t, be.SiLU(t))
}

// Sinusoidal is diffusers' get_timestep_embedding with max period 10000 and
// scale 1, computed in float32 step by step as PyTorch does: frequencies
// exp(-ln(10000)·i/(dim/2 − shift)) for i < dim/2, then [sin, cos] of t·f
// ([cos, sin] when flip), zero-padded to dim when dim is odd. Result is
// (len(ts), dim), row-major.
func Sinusoidal(ts []float32, dim int, flip bool, shift float64) []float32 {
	half := dim / 2
	freqs := make([]float32, half)
	logMax := float32(-math.Log(10000))
	div := float32(float64(half) - shift)
	for i := range freqs {
		e := float32(i) * logMax / div
		freqs[i] = float32(math.Exp(float64(e)))
	}
	out := make([]float32, len(ts)*dim)
	for b, t := range ts {
		row := out[b*dim : (b+1)*dim]
		for i, f := range freqs {
			arg := float64(t * f)
			s, c := float32(math.Sin(arg)), float32(math.Cos(arg))
			if flip {
				row[i], row[half+i] = c, s
			} else {
				row[i], row[half+i] = s, c
			}
		}
	}
	return out
}

// cropOnHost returns the top-left (h, w) window of x (B, C, H, W). The
// backend interface has no slicing op, so the crop goes through the host;
// it is needed only for samples whose size does not divide by Factor.
func cropOnHost(be backend.Backend, x *tensor.Tensor, h, w int) *tensor.Tensor {
	s := x.Shape()
	if h > s[2] || w > s[3] {
		backend.Fail("crop", "window %d×%d larger than %s", h, w, s)
	}
	src := be.ToFloat32(x)
	dst := make([]float32, s[0]*s[1]*h*w)
	for p := range s[0] * s[1] {
		for y := range h {
			copy(dst[(p*h+y)*w:(p*h+y+1)*w], src[(p*s[2]+y)*s[3]:])
		}
	}
	return be.FromFloat32(tensor.Shape{s[0], s[1], h, w}, dst)
}
