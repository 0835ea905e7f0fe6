package checkpoint

import "strconv"

// TensorSpec is one tensor a component must hold: its diffusers name and
// shape.
type TensorSpec struct {
	Name  string
	Shape []int
}

func itoa(i int) string { return strconv.Itoa(i) }

// specs accumulates tensor specs under a name prefix.
type specs []TensorSpec

func (s *specs) add(name string, shape ...int) { *s = append(*s, TensorSpec{name, shape}) }

// linear adds a weight (out, in) and a bias (out).
func (s *specs) linear(p string, out, in int) {
	s.add(p+".weight", out, in)
	s.add(p+".bias", out)
}

// conv adds a k×k convolution weight and its bias.
func (s *specs) conv(p string, out, in, k int) {
	s.add(p+".weight", out, in, k, k)
	s.add(p+".bias", out)
}

// norm adds a normalisation layer's scale and shift.
func (s *specs) norm(p string, c int) {
	s.add(p+".weight", c)
	s.add(p+".bias", c)
}

// timeDim returns the UNet's time embedding width.
func (l UNetLayout) timeDim() int {
	if l.TimeEmbeddingDim > 0 {
		return l.TimeEmbeddingDim
	}
	return 4 * l.BlockOut[0]
}

func (l UNetLayout) resnet(s *specs, p string, in, out int) {
	s.norm(p+".norm1", in)
	s.conv(p+".conv1", out, in, 3)
	s.linear(p+".time_emb_proj", out, l.timeDim())
	s.norm(p+".norm2", out)
	s.conv(p+".conv2", out, out, 3)
	if in != out {
		s.conv(p+".conv_shortcut", out, in, 1)
	}
}

func (l UNetLayout) transformer(s *specs, p string, c, depth int) {
	s.norm(p+".norm", c)
	for _, proj := range []string{".proj_in", ".proj_out"} {
		if l.UseLinearProjection {
			s.linear(p+proj, c, c)
		} else {
			s.conv(p+proj, c, c, 1)
		}
	}
	for t := 0; t < depth; t++ {
		b := p + ".transformer_blocks." + itoa(t)
		s.norm(b+".norm1", c)
		s.norm(b+".norm2", c)
		s.norm(b+".norm3", c)
		for a, ctx := range map[string]int{".attn1": c, ".attn2": l.CrossAttentionDim} {
			s.add(b+a+".to_q.weight", c, c)
			s.add(b+a+".to_k.weight", c, ctx)
			s.add(b+a+".to_v.weight", c, ctx)
			s.linear(b+a+".to_out.0", c, c)
		}
		s.linear(b+".ff.net.0.proj", 8*c, c) // GEGLU: value and gate halves
		s.linear(b+".ff.net.2", c, 4*c)
	}
}

// ExpectedTensors lists every tensor a UNet with this layout holds, with
// its shape, in diffusers naming.
func (l UNetLayout) ExpectedTensors() []TensorSpec {
	var s specs
	L := len(l.BlockOut)
	b0 := l.BlockOut[0]
	s.conv("conv_in", b0, l.InChannels, 3)
	s.linear("time_embedding.linear_1", l.timeDim(), b0)
	s.linear("time_embedding.linear_2", l.timeDim(), l.timeDim())
	if l.AddEmbedInputDim > 0 {
		s.linear("add_embedding.linear_1", l.timeDim(), l.AddEmbedInputDim)
		s.linear("add_embedding.linear_2", l.timeDim(), l.timeDim())
	}
	out := b0
	for b := 0; b < L; b++ {
		in := out
		out = l.BlockOut[b]
		p := "down_blocks." + itoa(b)
		for r := 0; r < l.LayersPerBlock; r++ {
			rin := out
			if r == 0 {
				rin = in
			}
			l.resnet(&s, p+".resnets."+itoa(r), rin, out)
			if l.DownAttention[b] {
				l.transformer(&s, p+".attentions."+itoa(r), out, l.DownDepth[b])
			}
		}
		if b < L-1 {
			s.conv(p+".downsamplers.0.conv", out, out, 3)
		}
	}
	c := l.BlockOut[L-1]
	l.resnet(&s, "mid_block.resnets.0", c, c)
	l.transformer(&s, "mid_block.attentions.0", c, l.MidDepth)
	l.resnet(&s, "mid_block.resnets.1", c, c)
	prevOut := c
	for i := 0; i < L; i++ {
		level := L - 1 - i
		outC := l.BlockOut[level]
		inC := l.BlockOut[max(level-1, 0)]
		p := "up_blocks." + itoa(i)
		for r := 0; r <= l.LayersPerBlock; r++ {
			skip := outC
			if r == l.LayersPerBlock {
				skip = inC
			}
			rin := outC
			if r == 0 {
				rin = prevOut
			}
			l.resnet(&s, p+".resnets."+itoa(r), rin+skip, outC)
			if l.UpAttention[i] {
				l.transformer(&s, p+".attentions."+itoa(r), outC, l.UpDepth[i])
			}
		}
		if i < L-1 {
			s.conv(p+".upsamplers.0.conv", outC, outC, 3)
		}
		prevOut = outC
	}
	s.norm("conv_norm_out", b0)
	s.conv("conv_out", l.OutChannels, b0, 3)
	return s
}

func vaeResnet(s *specs, p string, in, out int) {
	s.norm(p+".norm1", in)
	s.conv(p+".conv1", out, in, 3)
	s.norm(p+".norm2", out)
	s.conv(p+".conv2", out, out, 3)
	if in != out {
		s.conv(p+".conv_shortcut", out, in, 1)
	}
}

func vaeMid(s *specs, p string, c int, attn bool) {
	vaeResnet(s, p+".resnets.0", c, c)
	if attn {
		s.norm(p+".attentions.0.group_norm", c)
		for _, m := range []string{"to_q", "to_k", "to_v", "to_out.0"} {
			s.linear(p+".attentions.0."+m, c, c)
		}
	}
	vaeResnet(s, p+".resnets.1", c, c)
}

// ExpectedTensors lists every tensor an AutoencoderKL with this layout
// holds, with its shape.
func (l VAELayout) ExpectedTensors() []TensorSpec {
	var s specs
	L := len(l.BlockOut)
	b0, c := l.BlockOut[0], l.BlockOut[L-1]
	z := l.LatentChannels
	s.conv("encoder.conv_in", b0, l.InChannels, 3)
	out := b0
	for b := 0; b < L; b++ {
		in := out
		out = l.BlockOut[b]
		for r := 0; r < l.LayersPerBlock; r++ {
			rin := out
			if r == 0 {
				rin = in
			}
			vaeResnet(&s, "encoder.down_blocks."+itoa(b)+".resnets."+itoa(r), rin, out)
		}
		if b < L-1 {
			s.conv("encoder.down_blocks."+itoa(b)+".downsamplers.0.conv", out, out, 3)
		}
	}
	vaeMid(&s, "encoder.mid_block", c, l.MidAttention)
	s.norm("encoder.conv_norm_out", c)
	s.conv("encoder.conv_out", 2*z, c, 3)
	if l.QuantConv {
		s.conv("quant_conv", 2*z, 2*z, 1)
	}
	if l.PostQuantConv {
		s.conv("post_quant_conv", z, z, 1)
	}
	s.conv("decoder.conv_in", c, z, 3)
	vaeMid(&s, "decoder.mid_block", c, l.MidAttention)
	prev := c
	for i := 0; i < L; i++ {
		outC := l.BlockOut[L-1-i]
		for r := 0; r <= l.LayersPerBlock; r++ {
			rin := outC
			if r == 0 {
				rin = prev
			}
			vaeResnet(&s, "decoder.up_blocks."+itoa(i)+".resnets."+itoa(r), rin, outC)
		}
		if i < L-1 {
			s.conv("decoder.up_blocks."+itoa(i)+".upsamplers.0.conv", outC, outC, 3)
		}
		prev = outC
	}
	s.norm("decoder.conv_norm_out", b0)
	s.conv("decoder.conv_out", l.OutChannels, b0, 3)
	return s
}

// ExpectedTensors lists every tensor of a CLIP text model with this layout,
// named without the "text_model." prefix.
func (l TextLayout) ExpectedTensors() []TensorSpec {
	var s specs
	h := l.Hidden
	s.add("embeddings.token_embedding.weight", l.Vocab, h)
	s.add("embeddings.position_embedding.weight", l.Positions, h)
	for i := 0; i < l.Layers; i++ {
		p := "encoder.layers." + itoa(i)
		s.norm(p+".layer_norm1", h)
		s.norm(p+".layer_norm2", h)
		for _, q := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
			s.linear(p+".self_attn."+q, h, h)
		}
		s.linear(p+".mlp.fc1", l.Intermediate, h)
		s.linear(p+".mlp.fc2", h, l.Intermediate)
	}
	s.norm("final_layer_norm", h)
	if l.Projection > 0 {
		s.add("text_projection.weight", l.Projection, h)
	}
	return s
}
