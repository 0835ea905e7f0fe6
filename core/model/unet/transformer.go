package unet

import (
	"math"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/model/nn"
	"github.com/kiln-project/kiln/core/tensor"
)

// transformer2D is diffusers' Transformer2DModel for continuous input:
// GroupNorm, proj_in (1×1 conv or linear), BasicTransformerBlocks over the
// H·W tokens, proj_out, plus the input.
type transformer2D struct {
	norm *nn.GroupNorm
	// Exactly one pair is set, by use_linear_projection.
	projInConv, projOutConv *nn.Conv2D
	projIn, projOut         *nn.Linear
	blocks                  []*basicBlock
}

// basicBlock is BasicTransformerBlock with layer norms: self-attention,
// cross-attention to the context, and a GEGLU feed-forward, each residual.
type basicBlock struct {
	norm1, norm2, norm3 *nn.LayerNorm
	attn1, attn2        *attention
	ffIn, ffOut         *nn.Linear
}

// attention is diffusers' Attention without biases on q, k, v.
type attention struct {
	q, k, v, out *nn.Linear
	params       backend.AttentionParams
}

// newTransformer2D declares the Transformer2D of a block at level lvl with
// ch channels.
func newTransformer2D(ws *nn.Weights, cfg Config, ch, lvl int) *transformer2D {
	heads := cfg.Heads[lvl]
	inner := ch // heads × (ch / heads)
	t := &transformer2D{norm: nn.NewGroupNorm(ws, "norm", cfg.NormGroups, ch, 1e-6)}
	if cfg.UseLinearProjection {
		t.projIn = nn.NewLinear(ws, "proj_in", ch, inner, true)
	} else {
		t.projInConv = nn.NewConv2D(ws, "proj_in", ch, inner, 1, backend.SymmetricPad(1, 0))
	}
	p := backend.AttentionParams{
		Heads:  heads,
		Scale:  float32(1 / math.Sqrt(float64(inner/heads))),
		Upcast: cfg.UpcastAttention,
	}
	for i := range cfg.TransformerLayers[lvl] {
		bw := ws.Subf("transformer_blocks.%d", i)
		b := &basicBlock{
			norm1: nn.NewLayerNorm(bw, "norm1", inner, 1e-5),
			attn1: newAttention(bw.Sub("attn1"), inner, inner, p),
			norm2: nn.NewLayerNorm(bw, "norm2", inner, 1e-5),
			attn2: newAttention(bw.Sub("attn2"), inner, cfg.CrossAttentionDim[lvl], p),
			norm3: nn.NewLayerNorm(bw, "norm3", inner, 1e-5),
			ffIn:  nn.NewLinear(bw, "ff.net.0.proj", inner, 2*4*inner, true),
			ffOut: nn.NewLinear(bw, "ff.net.2", 4*inner, inner, true),
		}
		t.blocks = append(t.blocks, b)
	}
	if cfg.UseLinearProjection {
		t.projOut = nn.NewLinear(ws, "proj_out", inner, ch, true)
	} else {
		t.projOutConv = nn.NewConv2D(ws, "proj_out", inner, ch, 1, backend.SymmetricPad(1, 0))
	}
	return t
}

func newAttention(ws *nn.Weights, dim, kvDim int, p backend.AttentionParams) *attention {
	return &attention{
		q:      nn.NewLinear(ws, "to_q", dim, dim, false),
		k:      nn.NewLinear(ws, "to_k", kvDim, dim, false),
		v:      nn.NewLinear(ws, "to_v", kvDim, dim, false),
		out:    nn.NewLinear(ws, "to_out.0", dim, dim, true),
		params: p,
	}
}

// forward runs the transformer on x (B, C, H, W) with context cond
// (B, L, D) and returns a new tensor; x is left alone.
func (t *transformer2D) forward(be backend.Backend, x, cond *tensor.Tensor) *tensor.Tensor {
	h, w := x.Dim(2), x.Dim(3)
	s := t.norm.Forward(be, x, false)
	if t.projInConv != nil {
		s = nn.Swap(be, s, t.projInConv.Forward(be, s))
		s = nn.Swap(be, s, be.ImageToTokens(s))
	} else {
		s = nn.Swap(be, s, be.ImageToTokens(s))
		s = nn.Swap(be, s, t.projIn.Forward(be, s))
	}
	for _, b := range t.blocks {
		s = nn.Swap(be, s, b.forward(be, s, cond))
	}
	if t.projOutConv != nil {
		s = nn.Swap(be, s, be.TokensToImage(s, h, w))
		s = nn.Swap(be, s, t.projOutConv.Forward(be, s))
	} else {
		s = nn.Swap(be, s, t.projOut.Forward(be, s))
		s = nn.Swap(be, s, be.TokensToImage(s, h, w))
	}
	return nn.Swap(be, s, be.Add(s, x))
}

// forward runs one block on tokens s (B, N, C); s is left alone.
func (b *basicBlock) forward(be backend.Backend, s, cond *tensor.Tensor) *tensor.Tensor {
	n := b.norm1.Forward(be, s)
	a := b.attn1.forward(be, n, n)
	be.Free(n)
	h := be.Add(s, a)
	be.Free(a)

	n = b.norm2.Forward(be, h)
	a = b.attn2.forward(be, n, cond)
	be.Free(n)
	h = nn.Swap(be, h, be.Add(h, a))
	be.Free(a)

	n = b.norm3.Forward(be, h)
	f := nn.Swap(be, n, b.ffIn.Forward(be, n))
	f = nn.Swap(be, f, be.GEGLU(f))
	f = nn.Swap(be, f, b.ffOut.Forward(be, f))
	h = nn.Swap(be, h, be.Add(h, f))
	be.Free(f)
	return h
}

// forward attends from x (B, N, C) to kv (B, L, kvDim).
func (a *attention) forward(be backend.Backend, x, kv *tensor.Tensor) *tensor.Tensor {
	q := a.q.Forward(be, x)
	k := a.k.Forward(be, kv)
	v := a.v.Forward(be, kv)
	o := be.Attention(q, k, v, a.params)
	be.Free(q, k, v)
	return nn.Swap(be, o, a.out.Forward(be, o))
}
