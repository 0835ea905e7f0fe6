package qwenimage

import (
	"context"
	"fmt"
	"math"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/model/nn"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
)

// TransformerConfig is the architecture of a QwenImageTransformer2DModel,
// read from transformer/config.json.
type TransformerConfig struct {
	PatchSize         int
	InChannels        int
	OutChannels       int
	Layers            int
	HeadDim           int
	Heads             int
	JointAttentionDim int
	// AxesDims splits each head's rotary dimensions over frame, height
	// and width (axes_dims_rope; they sum to HeadDim).
	AxesDims [3]int
}

// Inner returns the transformer width, heads × head size.
func (c TransformerConfig) Inner() int { return c.Heads * c.HeadDim }

// ParseTransformerConfig reads a QwenImageTransformer2DModel config.json.
// Unknown fields and variants this package does not implement (guidance
// embeddings, zero_cond_t, additional timestep conditioning, layered 3-D
// RoPE) are errors.
func ParseTransformerConfig(data []byte) (TransformerConfig, error) {
	r, err := nn.NewConfigReader("transformer", data)
	if err != nil {
		return TransformerConfig{}, err
	}
	for _, name := range r.Names() {
		switch name {
		case "patch_size", "in_channels", "out_channels", "num_layers", "attention_head_dim", "num_attention_heads",
			"joint_attention_dim", "axes_dims_rope", "guidance_embeds", "zero_cond_t", "use_additional_t_cond",
			"use_layer3d_rope", "_class_name", "_diffusers_version", "_name_or_path":
		default:
			r.Failf(name, "unknown field (not a QwenImageTransformer2DModel setting this package knows)")
		}
	}
	if cls, ok := r.OptString("_class_name"); ok && cls != "QwenImageTransformer2DModel" {
		r.Failf("_class_name", "%q is not QwenImageTransformer2DModel", cls)
	}
	c := TransformerConfig{
		PatchSize:         r.Int("patch_size", 2),
		InChannels:        r.Int("in_channels", 64),
		Layers:            r.Int("num_layers", 60),
		HeadDim:           r.Int("attention_head_dim", 128),
		Heads:             r.Int("num_attention_heads", 24),
		JointAttentionDim: r.Int("joint_attention_dim", 3584),
	}
	c.OutChannels = c.InChannels
	if !r.Null("out_channels") {
		c.OutChannels = r.Int("out_channels", 16)
	}
	axes := r.Ints("axes_dims_rope", []int{16, 56, 56})
	for _, f := range []string{"guidance_embeds", "zero_cond_t", "use_additional_t_cond", "use_layer3d_rope"} {
		if r.Bool(f, false) {
			r.Failf(f, "is not implemented (Qwen-Image text-to-image uses false)")
		}
	}
	if err := r.Err(); err != nil {
		return TransformerConfig{}, err
	}
	if len(axes) != 3 {
		return TransformerConfig{}, fmt.Errorf("transformer config: axes_dims_rope %v: want three axes", axes)
	}
	copy(c.AxesDims[:], axes)
	const limit = 1 << 16
	bad := func(format string, args ...any) (TransformerConfig, error) {
		return TransformerConfig{}, fmt.Errorf("transformer config: "+format, args...)
	}
	switch {
	case c.PatchSize < 1 || c.PatchSize > 16:
		return bad("patch_size %d out of range", c.PatchSize)
	case c.InChannels < 1 || c.OutChannels < 1 || c.Layers < 0 || c.Heads < 1 || c.HeadDim < 2 || c.JointAttentionDim < 1:
		return bad("sizes must be positive")
	case c.InChannels > limit || c.OutChannels > limit || c.Layers > 1024 || c.Inner() > limit || c.JointAttentionDim > limit:
		return bad("sizes out of range")
	case c.InChannels%(c.PatchSize*c.PatchSize) != 0:
		return bad("in_channels %d is not latent channels × patch_size²", c.InChannels)
	case axes[0]+axes[1]+axes[2] != c.HeadDim || axes[0]%2 != 0 || axes[1]%2 != 0 || axes[2]%2 != 0:
		return bad("axes_dims_rope %v must be even and sum to attention_head_dim %d", axes, c.HeadDim)
	}
	return c, nil
}

// Transformer is QwenImageTransformer2DModel: 2×2-patchified latents and
// the projected text hidden states run through dual-stream MMDiT blocks —
// separate AdaLN-modulated weights per stream, one joint attention over
// text and image tokens with RMS-normalised queries and keys and 3-axis
// rotary embeddings — then an AdaLN output norm and a projection back to
// patches.
type Transformer struct {
	cfg    TransformerConfig
	be     backend.Backend
	ops    backend.TransformerOps
	ws     *nn.Weights
	imgIn  *nn.Linear
	txtIn  *nn.Linear
	txtNrm *nn.RMSNorm
	time1  *nn.Linear
	time2  *nn.Linear
	blocks []*mmBlock
	normO  *nn.Linear
	projO  *nn.Linear
	freqs  [3][]float32
}

type stream struct {
	mod        *nn.Linear
	q, k, v, o *nn.Linear
	nq, nk     *nn.RMSNorm
	fc1, fc2   *nn.Linear
}

type mmBlock struct {
	img, txt stream
}

// NewTransformer declares the weights for cfg, checks them against src
// (presence, shapes, dtypes; no stray tensors) and uploads them to be.
func NewTransformer(be backend.Backend, cfg TransformerConfig, src safetensors.Source) (*Transformer, error) {
	ops, err := backend.AsTransformer(be)
	if err != nil {
		return nil, fmt.Errorf("qwenimage transformer: %w", err)
	}
	t := declareTransformer(cfg)
	t.be, t.ops = be, ops
	ws := t.ws
	if err := ws.Load(be, src); err != nil {
		return nil, fmt.Errorf("qwenimage transformer: %w", err)
	}
	for a := range 3 {
		t.freqs[a] = nn.RopeFreqs(cfg.AxesDims[a], ropeTheta)
	}
	return t, nil
}

const (
	timeProjDim = 256
	ropeTheta   = 10000
)

// Config returns the transformer's configuration.
func (t *Transformer) Config() TransformerConfig { return t.cfg }

// Weights returns the declared weights.
func (t *Transformer) Weights() *nn.Weights { return t.ws }

// TransformerInput is one transformer call over a batch of rows.
type TransformerInput struct {
	// X is (B, H·W, InChannels) patchified latents (see Pack) of an H×W
	// patch grid.
	X    []float32
	H, W int
	// Context is (B, T, JointAttentionDim) text hidden states; Mask, when
	// not nil, is (B, T) with 0 for padding.
	Context []float32
	T       int
	Mask    []float32
	// Timesteps holds one timestep in [0, 1] per row (the scheduler's
	// timestep / 1000).
	Timesteps []float32
}

// Forward returns the (B, H·W, patch²·OutChannels) prediction. Rows run
// one at a time: each row's padded text tokens are dropped (their keys
// are masked out in diffusers, so the image tokens come out the same)
// while the kept ones keep their positions.
func (t *Transformer) Forward(ctx context.Context, in TransformerInput) (out []float32, err error) {
	defer backend.Recover(&err)
	c := t.cfg
	B := len(in.Timesteps)
	L := in.H * in.W
	switch {
	case B == 0:
		return nil, fmt.Errorf("qwenimage transformer: empty batch")
	case in.H < 1 || in.W < 1 || len(in.X) != B*L*c.InChannels:
		return nil, fmt.Errorf("qwenimage transformer: x holds %d values, want %d rows × %d×%d patches × %d", len(in.X), B, in.H, in.W, c.InChannels)
	case in.T < 1 || len(in.Context) != B*in.T*c.JointAttentionDim:
		return nil, fmt.Errorf("qwenimage transformer: context holds %d values, want %d rows × %d tokens × %d", len(in.Context), B, in.T, c.JointAttentionDim)
	case in.Mask != nil && len(in.Mask) != B*in.T:
		return nil, fmt.Errorf("qwenimage transformer: mask holds %d values, want %d", len(in.Mask), B*in.T)
	}
	imgCos, imgSin := t.imageRope(in.H, in.W)
	o := c.PatchSize * c.PatchSize * c.OutChannels
	out = make([]float32, 0, B*L*o)
	for b := range B {
		var keep []int
		for i := range in.T {
			if in.Mask == nil || in.Mask[b*in.T+i] != 0 {
				keep = append(keep, i)
			}
		}
		if len(keep) == 0 {
			return nil, fmt.Errorf("qwenimage transformer: row %d: the mask leaves no text token", b)
		}
		txt := make([]float32, 0, len(keep)*c.JointAttentionDim)
		for _, i := range keep {
			row := in.Context[(b*in.T+i)*c.JointAttentionDim:]
			txt = append(txt, row[:c.JointAttentionDim]...)
		}
		x := in.X[b*L*c.InChannels : (b+1)*L*c.InChannels]
		r, err := t.forwardRow(ctx, x, txt, keep, in.Timesteps[b], in.H, in.W, imgCos, imgSin)
		if err != nil {
			return nil, err
		}
		out = append(out, r...)
	}
	return out, nil
}

// imageRope returns the image tokens' rotary tables (H·W, HeadDim/2):
// frame 0, and height and width positions centred on the grid
// (scale_rope: −⌈n/2⌉ … ⌊n/2⌋−1).
func (t *Transformer) imageRope(h, w int) (cos, sin []float32) {
	pos := make([][]float32, 0, h*w)
	for y := range h {
		for x := range w {
			pos = append(pos, []float32{0, float32(y - (h - h/2)), float32(x - (w - w/2))})
		}
	}
	return nn.RopeTable(pos, t.freqs[:])
}

// textRope returns the text tokens' tables: token i of the (unpadded)
// sequence sits at position max(h/2, w/2) + i on all three axes.
func (t *Transformer) textRope(keep []int, h, w int) (cos, sin []float32) {
	base := max(h/2, w/2)
	pos := make([][]float32, len(keep))
	for j, i := range keep {
		p := float32(base + i)
		pos[j] = []float32{p, p, p}
	}
	return nn.RopeTable(pos, t.freqs[:])
}

func (t *Transformer) forwardRow(ctx context.Context, x, txt []float32, keep []int, ts float32, h, w int, imgCos, imgSin []float32) (out []float32, err error) {
	be, ops, c := t.be, t.ops, t.cfg
	d := c.Inner()
	L, T := h*w, len(keep)
	half := c.HeadDim / 2
	up := func(shape tensor.Shape, v []float32) *tensor.Tensor { return be.FromFloat32(shape, v) }
	tc, tsn := t.textRope(keep, h, w)
	rope := [2][2]*tensor.Tensor{
		{up(tensor.Shape{L, half}, imgCos), up(tensor.Shape{L, half}, imgSin)},
		{up(tensor.Shape{T, half}, tc), up(tensor.Shape{T, half}, tsn)},
	}
	defer be.Free(rope[0][0], rope[0][1], rope[1][0], rope[1][1])

	tp := up(tensor.Shape{1, timeProjDim}, nn.TimestepEmbedding([]float32{ts}, timeProjDim, true, 0, 1000))
	temb := nn.Swap(be, tp, t.time1.Forward(be, tp))
	temb = nn.Swap(be, temb, be.SiLU(temb))
	temb = nn.Swap(be, temb, t.time2.Forward(be, temb))
	tact := be.SiLU(temb)
	be.Free(temb)
	defer be.Free(tact)

	xi := up(tensor.Shape{1, L, c.InChannels}, x)
	img := nn.Swap(be, xi, t.imgIn.Forward(be, xi))
	tx := up(tensor.Shape{1, T, c.JointAttentionDim}, txt)
	tx = nn.Swap(be, tx, t.txtNrm.Forward(ops, tx))
	tx = nn.Swap(be, tx, t.txtIn.Forward(be, tx))
	for i, blk := range t.blocks {
		if err := ctx.Err(); err != nil {
			be.Free(img, tx)
			return nil, fmt.Errorf("qwenimage transformer: block %d: %w", i, err)
		}
		img, tx = blk.forward(be, ops, c, img, tx, tact, rope)
	}
	be.Free(tx)
	mod := t.normO.Forward(be, tact)
	scale, shift := ops.Narrow(mod, 1, 0, d), ops.Narrow(mod, 1, d, 2*d)
	be.Free(mod)
	n := be.LayerNorm(img, nil, nil, 1e-6)
	be.Free(img)
	n = nn.Swap(be, n, ops.Modulate(n, shift, scale))
	be.Free(scale, shift)
	n = nn.Swap(be, n, t.projO.Forward(be, n))
	out = be.ToFloat32(n)
	be.Free(n)
	return out, nil
}

// qkv projects one stream's modulated tokens to RMS-normalised, rotated
// queries and keys and to values.
func (s *stream) qkv(be backend.Backend, ops backend.TransformerOps, c TransformerConfig, x, cos, sin *tensor.Tensor) (q, k, v *tensor.Tensor) {
	headNorm := func(n *nn.RMSNorm, y *tensor.Tensor) *tensor.Tensor {
		sh := y.Shape()
		r := be.Reshape(y, tensor.Shape{sh[0], sh[1] * c.Heads, c.HeadDim})
		be.Free(y)
		r = nn.Swap(be, r, n.Forward(ops, r))
		return nn.Swap(be, r, be.Reshape(r, sh))
	}
	q = headNorm(s.nq, s.q.Forward(be, x))
	k = headNorm(s.nk, s.k.Forward(be, x))
	v = s.v.Forward(be, x)
	q = nn.Swap(be, q, ops.Rotary(q, cos, sin, c.Heads, true))
	k = nn.Swap(be, k, ops.Rotary(k, cos, sin, c.Heads, true))
	return q, k, v
}

// chunks splits a (1, 6D) modulation into shift, scale, gate for the
// attention (0) and the MLP (1).
func chunks(ops backend.TransformerOps, mod *tensor.Tensor, d int) (m [2][3]*tensor.Tensor) {
	for i := range 2 {
		for j := range 3 {
			k := (3*i + j) * d
			m[i][j] = ops.Narrow(mod, 1, k, k+d)
		}
	}
	return m
}

func (blk *mmBlock) forward(be backend.Backend, ops backend.TransformerOps, c TransformerConfig, img, txt, tact *tensor.Tensor, rope [2][2]*tensor.Tensor) (*tensor.Tensor, *tensor.Tensor) {
	d := c.Inner()
	im := blk.img.mod.Forward(be, tact)
	tm := blk.txt.mod.Forward(be, tact)
	imod, tmod := chunks(ops, im, d), chunks(ops, tm, d)
	be.Free(im, tm)
	modulated := func(x *tensor.Tensor, m [3]*tensor.Tensor) *tensor.Tensor {
		n := be.LayerNorm(x, nil, nil, 1e-6)
		return nn.Swap(be, n, ops.Modulate(n, m[0], m[1]))
	}
	ia := modulated(img, imod[0])
	ta := modulated(txt, tmod[0])
	qi, ki, vi := blk.img.qkv(be, ops, c, ia, rope[0][0], rope[0][1])
	qt, kt, vt := blk.txt.qkv(be, ops, c, ta, rope[1][0], rope[1][1])
	be.Free(ia, ta)
	q, k, v := ops.Concat(qt, qi, 1), ops.Concat(kt, ki, 1), ops.Concat(vt, vi, 1)
	be.Free(qi, ki, vi, qt, kt, vt)
	a := be.Attention(q, k, v, backend.AttentionParams{Heads: c.Heads, Scale: float32(1 / math.Sqrt(float64(c.HeadDim))), Upcast: true})
	be.Free(q, k, v)
	T := txt.Dim(1)
	at, ai := ops.Narrow(a, 1, 0, T), ops.Narrow(a, 1, T, a.Dim(1))
	be.Free(a)
	ai = nn.Swap(be, ai, blk.img.o.Forward(be, ai))
	at = nn.Swap(be, at, blk.txt.o.Forward(be, at))
	img = nn.Swap(be, img, ops.AddGated(img, ai, imod[0][2]))
	txt = nn.Swap(be, txt, ops.AddGated(txt, at, tmod[0][2]))
	be.Free(ai, at)
	mlp := func(s *stream, x *tensor.Tensor, m [3]*tensor.Tensor) *tensor.Tensor {
		h := modulated(x, m)
		h = nn.Swap(be, h, s.fc1.Forward(be, h))
		h = nn.Swap(be, h, ops.GELUTanh(h))
		h = nn.Swap(be, h, s.fc2.Forward(be, h))
		y := ops.AddGated(x, h, m[2])
		be.Free(x, h)
		return y
	}
	img = mlp(&blk.img, img, imod[1])
	txt = mlp(&blk.txt, txt, tmod[1])
	for i := range 2 {
		be.Free(imod[i][0], imod[i][1], imod[i][2], tmod[i][0], tmod[i][1], tmod[i][2])
	}
	return img, txt
}

// Pack patchifies latents (B, C, H, W) into (B, H/p·W/p, C·p²) tokens as
// QwenImagePipeline._pack_latents does (p = 2).
func Pack(x []float32, b, ch, h, w, p int) []float32 {
	out := make([]float32, len(x))
	gh, gw := h/p, w/p
	i := 0
	for n := range b {
		for y := range gh {
			for xx := range gw {
				for c := range ch {
					for dy := range p {
						for dx := range p {
							out[i] = x[((n*ch+c)*h+y*p+dy)*w+xx*p+dx]
							i++
						}
					}
				}
			}
		}
	}
	return out
}

// Unpack is the inverse of Pack.
func Unpack(t []float32, b, ch, h, w, p int) []float32 {
	out := make([]float32, len(t))
	gh, gw := h/p, w/p
	i := 0
	for n := range b {
		for y := range gh {
			for xx := range gw {
				for c := range ch {
					for dy := range p {
						for dx := range p {
							out[((n*ch+c)*h+y*p+dy)*w+xx*p+dx] = t[i]
							i++
						}
					}
				}
			}
		}
	}
	return out
}

// declareTransformer declares the weights of cfg (no backend yet).
func declareTransformer(cfg TransformerConfig) *Transformer {
	ws := nn.NewWeights()
	d := cfg.Inner()
	t := &Transformer{cfg: cfg, ws: ws}
	t.imgIn = nn.NewLinear(ws, "img_in", cfg.InChannels, d, true)
	t.txtIn = nn.NewLinear(ws, "txt_in", cfg.JointAttentionDim, d, true)
	t.txtNrm = nn.NewRMSNorm(ws, "txt_norm", cfg.JointAttentionDim, 1e-6)
	te := ws.Sub("time_text_embed").Sub("timestep_embedder")
	t.time1 = nn.NewLinear(te, "linear_1", timeProjDim, d, true)
	t.time2 = nn.NewLinear(te, "linear_2", d, d, true)
	for i := range cfg.Layers {
		s := ws.Subf("transformer_blocks.%d", i)
		a := s.Sub("attn")
		b := &mmBlock{
			img: stream{
				mod: nn.NewLinear(s.Sub("img_mod"), "1", d, 6*d, true),
				q:   nn.NewLinear(a, "to_q", d, d, true), k: nn.NewLinear(a, "to_k", d, d, true),
				v: nn.NewLinear(a, "to_v", d, d, true), o: nn.NewLinear(a.Sub("to_out"), "0", d, d, true),
				nq: nn.NewRMSNorm(a, "norm_q", cfg.HeadDim, 1e-6), nk: nn.NewRMSNorm(a, "norm_k", cfg.HeadDim, 1e-6),
				fc1: nn.NewLinear(s.Sub("img_mlp").Sub("net.0"), "proj", d, 4*d, true),
				fc2: nn.NewLinear(s.Sub("img_mlp").Sub("net"), "2", 4*d, d, true),
			},
			txt: stream{
				mod: nn.NewLinear(s.Sub("txt_mod"), "1", d, 6*d, true),
				q:   nn.NewLinear(a, "add_q_proj", d, d, true), k: nn.NewLinear(a, "add_k_proj", d, d, true),
				v: nn.NewLinear(a, "add_v_proj", d, d, true), o: nn.NewLinear(a, "to_add_out", d, d, true),
				nq: nn.NewRMSNorm(a, "norm_added_q", cfg.HeadDim, 1e-6), nk: nn.NewRMSNorm(a, "norm_added_k", cfg.HeadDim, 1e-6),
				fc1: nn.NewLinear(s.Sub("txt_mlp").Sub("net.0"), "proj", d, 4*d, true),
				fc2: nn.NewLinear(s.Sub("txt_mlp").Sub("net"), "2", 4*d, d, true),
			},
		}
		t.blocks = append(t.blocks, b)
	}
	t.normO = nn.NewLinear(ws.Sub("norm_out"), "linear", d, 2*d, true)
	t.projO = nn.NewLinear(ws, "proj_out", d, cfg.PatchSize*cfg.PatchSize*cfg.OutChannels, true)
	return t
}

// TransformerWeightInfos lists the tensors (names, shapes; dtype F32) a checkpoint
// of cfg holds, for a synthetic random-weight model.
func TransformerWeightInfos(cfg TransformerConfig) []safetensors.TensorInfo {
	return declareTransformer(cfg).ws.Infos()
}
