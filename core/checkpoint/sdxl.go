package checkpoint

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tokenizer"
)

// checkSDXL checks that an SDXL UNet fits its text encoders: it attends to
// their concatenated hidden states (only the second's for a refiner), and
// its added embedding takes the second's projected pooled output plus time
// ids.
func checkSDXL(unet UNetLayout, text, text2 TextLayout, hasText bool) error {
	if text2.Projection == 0 {
		return fmt.Errorf("checkpoint: SDXL's second text encoder must be a CLIPTextModelWithProjection")
	}
	if unet.AddEmbedInputDim == 0 {
		return fmt.Errorf("checkpoint: SDXL UNet without addition_embed_type text_time")
	}
	ctx, what := text2.Hidden, fmt.Sprintf("text_encoder_2 (%d)", text2.Hidden)
	if hasText {
		ctx += text.Hidden
		what = fmt.Sprintf("text_encoder (%d) + text_encoder_2 (%d)", text.Hidden, text2.Hidden)
	}
	if unet.CrossAttentionDim != ctx {
		return fmt.Errorf("checkpoint: the UNet attends to %d-wide text features, %s give %d", unet.CrossAttentionDim, what, ctx)
	}
	if unet.AddEmbedInputDim <= text2.Projection {
		return fmt.Errorf("checkpoint: the UNet's added embedding takes %d values, no more than text_encoder_2's pooled output (%d) leaves no room for time ids", unet.AddEmbedInputDim, text2.Projection)
	}
	return nil
}

// Key prefixes of SDXL's single-file (SGM) layout; the UNet and VAE use
// PrefixUNet and PrefixVAE as SD 1.x does.
const (
	// PrefixSDXLEmbedders starts the text encoders' keys.
	PrefixSDXLEmbedders = "conditioner.embedders."
	// PrefixSDXLCLIP starts the base's CLIP ViT-L keys (a transformers
	// CLIPTextModel state dict).
	PrefixSDXLCLIP = "conditioner.embedders.0.transformer."
	// PrefixSDXLOpenCLIP starts the base's OpenCLIP ViT-bigG keys.
	PrefixSDXLOpenCLIP = "conditioner.embedders.1.model."
	// PrefixSDXLRefinerOpenCLIP starts the refiner's OpenCLIP ViT-bigG keys
	// (its only text encoder).
	PrefixSDXLRefinerOpenCLIP = "conditioner.embedders.0.model."
	// MetaTextEncoder2Config holds SDXL's second text encoder config.
	MetaTextEncoder2Config = "kiln.text_encoder_2_config"
)

// SDXL constants of the original training setup, for configs inferred from
// a single file.
const (
	sdxlScalingFactor   = 0.13025
	sdxlHeadDim         = 64  // SDXL UNets use 64-channel heads
	sdxlAddTimeEmbedDim = 256 // addition_time_embed_dim of base and refiner
	sdxlSampleSize      = 128 // 1024 pixels
	sdxlTokenizer2Pad   = "!" // SDXL's second tokenizer pads with "!"
)

// DetectFamily tells from a single file's tensor names which model family
// it holds, or says what is missing or which unsupported architecture it
// looks like.
func DetectFamily(names []string) (string, error) {
	idx := nameIndex(slices.Sorted(slices.Values(names)))
	for _, o := range []struct{ prefix, what string }{
		{"double_blocks.", "Flux"}, {PrefixUNet + "double_blocks.", "Flux"},
		{"joint_blocks.", "Stable Diffusion 3"}, {PrefixUNet + "joint_blocks.", "Stable Diffusion 3"},
	} {
		if idx.hasPrefix(o.prefix) {
			return "", fmt.Errorf("checkpoint: the tensors (%s*) are a %s model, which is not supported (Stable Diffusion 1.x/2.x and SDXL are)", o.prefix, o.what)
		}
	}
	sdxl := idx.hasPrefix(PrefixSDXLEmbedders)
	sd := idx.hasPrefix(PrefixCLIP) || idx.hasPrefix(PrefixOpenCLIP)
	switch {
	case !idx.hasPrefix(PrefixUNet):
		return "", fmt.Errorf("checkpoint: no %s* tensors: not an original-layout Stable Diffusion checkpoint (a lone component file or another architecture?)", PrefixUNet)
	case sdxl && sd:
		return "", fmt.Errorf("checkpoint: the file holds both SD 1.x/2.x (cond_stage_model.*) and SDXL (%s*) text encoders", PrefixSDXLEmbedders)
	case sdxl:
		return FamilySDXL, nil
	case sd:
		return FamilySD, nil
	case idx.hasPrefix(PrefixUNet + "label_emb.0.0."):
		return "", fmt.Errorf("checkpoint: an SDXL UNet (%slabel_emb.*) without its text encoders (%s*): the file holds only part of an SDXL checkpoint", PrefixUNet, PrefixSDXLEmbedders)
	}
	return FamilySD, nil // FromOriginal names the missing text encoder
}

// fromSGM builds a Model from an SDXL single file: the base (CLIP ViT-L and
// OpenCLIP ViT-bigG) or the refiner (OpenCLIP only), as FromOriginal does
// for SD 1.x.
func fromSGM(src safetensors.Source, md map[string]string, opts Options) (*Model, error) {
	m := &Model{Layout: LayoutSingleFile, Family: FamilySDXL}
	groups, ignored := splitByPrefix(src.Names(), PrefixUNet, PrefixVAE, PrefixSDXLCLIP, PrefixSDXLOpenCLIP, PrefixSDXLRefinerOpenCLIP)
	unetNames, vaeNames, clipNames, baseOpen, refinerOpen := groups[0], groups[1], groups[2], groups[3], groups[4]
	m.Ignored = ignored
	refiner := len(clipNames) == 0
	openPrefix, openNames := PrefixSDXLOpenCLIP, baseOpen
	if refiner {
		openPrefix, openNames = PrefixSDXLRefinerOpenCLIP, refinerOpen
	}
	switch {
	case len(vaeNames) == 0:
		return nil, fmt.Errorf("checkpoint: SDXL file without %s* tensors: it carries no VAE", PrefixVAE)
	case !refiner && len(refinerOpen) > 0:
		return nil, fmt.Errorf("checkpoint: SDXL file with a CLIP text encoder at %s* and an OpenCLIP one at %s*: embedder 0 cannot be both", PrefixSDXLCLIP, PrefixSDXLRefinerOpenCLIP)
	case !refiner && len(baseOpen) == 0:
		return nil, fmt.Errorf("checkpoint: SDXL base file without %s* tensors: the second text encoder (OpenCLIP ViT-bigG) is missing", PrefixSDXLOpenCLIP)
	case refiner && len(refinerOpen) == 0:
		return nil, fmt.Errorf("checkpoint: SDXL file without %s* (base) or %s* (refiner) tensors: the OpenCLIP ViT-bigG text encoder is missing", PrefixSDXLOpenCLIP, PrefixSDXLRefinerOpenCLIP)
	}
	unet, vae, lpb, levels, err := mapUNetAndVAE(src, unetNames, vaeNames)
	if err != nil {
		return nil, err
	}
	text2, proj, ignored, err := openCLIPWithProjection(src, openPrefix, openNames)
	if err != nil {
		return nil, err
	}
	m.Ignored = append(m.Ignored, ignored...)
	var text *safetensors.View
	if !refiner {
		entries := map[string]safetensors.ViewEntry{}
		for _, n := range clipNames {
			d, err := textToDiffusers(PrefixSDXLCLIP, n)
			if err != nil {
				return nil, err
			}
			if d == "" {
				continue
			}
			if prev, dup := entries[d]; dup {
				return nil, fmt.Errorf("checkpoint: text encoder holds both %q and %q", prev.From, PrefixSDXLCLIP+n)
			}
			entries[d] = safetensors.ViewEntry{From: PrefixSDXLCLIP + n}
		}
		if text, err = safetensors.NewView(src, entries); err != nil {
			return nil, err
		}
	}

	pick := func(override []byte, key string, infer func() ([]byte, error)) ([]byte, error) {
		return pickConfig(override, md, key, infer)
	}
	if m.UNetConfig, err = pick(opts.UNetConfig, MetaUNetConfig, func() ([]byte, error) { return inferSDXLUNetConfig(unet) }); err != nil {
		return nil, err
	}
	if m.VAEConfig, err = pick(opts.VAEConfig, MetaVAEConfig, func() ([]byte, error) { return InferVAEConfig(vae, sdxlScalingFactor) }); err != nil {
		return nil, err
	}
	if m.TextEncoder2Config, err = pick(opts.TextEncoder2Config, MetaTextEncoder2Config, func() ([]byte, error) { return inferSDXLText2Config(joined{text2, proj}) }); err != nil {
		return nil, err
	}
	if !refiner {
		if m.TextEncoderConfig, err = pick(opts.TextEncoderConfig, MetaTextEncoderConfig, func() ([]byte, error) { return InferTextConfig(text) }); err != nil {
			return nil, err
		}
	}
	unetL, err := checkUNetAndVAE(unet, vae, m.UNetConfig, m.VAEConfig, lpb, levels)
	if err != nil {
		return nil, err
	}
	text2L, err := ParseTextLayout(m.TextEncoder2Config)
	if err != nil {
		return nil, err
	}
	openOrig := func(n string) string {
		if n == "text_projection.weight" {
			return openPrefix + "text_projection"
		}
		if o, ok := openCLIPOriginal(n); ok {
			return openPrefix + o
		}
		return n
	}
	text2Src := joined{text2, proj}
	if err := checkTensors("text_encoder_2", text2Src, text2L.ExpectedTensors(), origName(text2, openOrig)); err != nil {
		return nil, err
	}
	var textL TextLayout
	if !refiner {
		if textL, err = ParseTextLayout(m.TextEncoderConfig); err != nil {
			return nil, err
		}
		if err := checkTensors("text_encoder", text, textL.ExpectedTensors(), origName(text, func(n string) string { return PrefixSDXLCLIP + TextToOriginal(n) })); err != nil {
			return nil, err
		}
		m.TextEncoder = text
	}
	if err := checkSDXL(unetL, textL, text2L, !refiner); err != nil {
		return nil, err
	}
	m.UNet, m.VAE, m.TextEncoder2 = unet, vae, text2Src
	m.ForceZerosForEmptyPrompt, m.RequiresAestheticsScore = !refiner, refiner

	if err := m.sdxlTokenizers(opts, refiner); err != nil {
		return nil, err
	}
	prediction := opts.Prediction
	if prediction == "" {
		if prediction, err = predictionFromMetadata(md); err != nil {
			return nil, fmt.Errorf("checkpoint: %w", err)
		}
	}
	m.SchedulerConfig = SDXLSchedulerConfig(prediction)
	return m, nil
}

// sdxlTokenizers finds the tokenizers of an SDXL single file: the first
// (base only) from opts.TokenizerDir; the second from opts.Tokenizer2Dir,
// else the first's folder padding with "!". Without folders the embedded
// CLIP vocabulary serves both (see Model.Tokenizer and Model.Tokenizer2).
func (m *Model) sdxlTokenizers(opts Options, refiner bool) error {
	if !refiner {
		if opts.TokenizerDir == "" {
			m.EmbeddedPad = tokenizer.PadSD1
		} else {
			if err := findTokenizer(opts.TokenizerDir); err != nil {
				return err
			}
			m.TokenizerDir = opts.TokenizerDir
		}
	}
	m.Tokenizer2Dir = opts.Tokenizer2Dir
	if m.Tokenizer2Dir == "" {
		m.Tokenizer2Dir, m.Tokenizer2Pad = opts.TokenizerDir, sdxlTokenizer2Pad
	}
	if m.Tokenizer2Dir == "" {
		return nil // the embedded vocabulary, padding with "!"
	}
	return findTokenizer(m.Tokenizer2Dir)
}

// openCLIPWithProjection maps an SDXL OpenCLIP text tower (keys without
// prefix) to CLIPTextModelWithProjection names: every resblock is kept, and
// text_projection, stored (hidden, projection), becomes
// "text_projection.weight" (projection, hidden) in memory.
func openCLIPWithProjection(src safetensors.Source, prefix string, keys []string) (*safetensors.View, *safetensors.Memory, []string, error) {
	var rest []string
	var projKey string
	for _, k := range keys {
		if k == "text_projection" {
			projKey = prefix + k
			continue
		}
		rest = append(rest, k)
	}
	if projKey == "" {
		return nil, nil, nil, &TensorError{What: "text_encoder_2", Name: prefix + "text_projection"}
	}
	entries, ignored, err := openCLIPEntries(src, prefix, rest, true)
	if err != nil {
		return nil, nil, nil, err
	}
	view, err := safetensors.NewView(src, entries)
	if err != nil {
		return nil, nil, nil, err
	}
	info, _ := src.Info(projKey)
	raw, err := src.Bytes(projKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("checkpoint: %s: %w", projKey, err)
	}
	size := safetensors.DTypeSize(info.DType)
	if len(info.Shape) != 2 || !isFloat(info.DType) || size == 0 {
		return nil, nil, nil, &TensorError{What: "text_encoder_2", Name: projKey, Problem: fmt.Sprintf("has shape %v and dtype %s, want a 2-D floating-point matrix", info.Shape, info.DType)}
	}
	rows, cols := info.Shape[0], info.Shape[1]
	t := make([]byte, len(raw))
	for r := range rows {
		for c := range cols {
			copy(t[(c*rows+r)*size:(c*rows+r+1)*size], raw[(r*cols+c)*size:(r*cols+c+1)*size])
		}
	}
	mem, err := safetensors.NewMemory([]safetensors.WriteTensor{{Name: "text_projection.weight", DType: info.DType, Shape: []int{cols, rows}, Data: t}})
	if err != nil {
		return nil, nil, nil, err
	}
	return view, mem, ignored, nil
}

// joined presents two sources with disjoint names as one.
type joined [2]safetensors.Source

// Names returns the tensor names of both, sorted.
func (j joined) Names() []string {
	return slices.Sorted(slices.Values(append(j[0].Names(), j[1].Names()...)))
}

// Info describes the named tensor of either source.
func (j joined) Info(name string) (safetensors.TensorInfo, bool) {
	if info, ok := j[0].Info(name); ok {
		return info, true
	}
	return j[1].Info(name)
}

// Bytes returns the named tensor's bytes from the source that holds it.
func (j joined) Bytes(name string) ([]byte, error) {
	if _, ok := j[0].Info(name); ok {
		return j[0].Bytes(name)
	}
	return j[1].Bytes(name)
}

// inferSDXLUNetConfig is InferUNetConfig for SDXL: 64-channel heads, the
// text_time added embedding (its input width from the weights, 256 per
// time id) and the 1024-pixel sample size.
func inferSDXLUNetConfig(src safetensors.Source) ([]byte, error) {
	js, err := InferUNetConfig(src)
	if err != nil {
		return nil, err
	}
	var cfg map[string]any
	if err := json.Unmarshal(js, &cfg); err != nil {
		return nil, fmt.Errorf("checkpoint: infer unet config: %w", err)
	}
	add, err := shapeOf(src, "infer unet config", "add_embedding.linear_1.weight", 2)
	if err != nil {
		return nil, err
	}
	var blockOut []int
	for _, v := range cfg["block_out_channels"].([]any) {
		blockOut = append(blockOut, int(v.(float64)))
	}
	heads := make([]int, len(blockOut))
	for i, c := range blockOut {
		if c%sdxlHeadDim != 0 {
			return nil, fmt.Errorf("checkpoint: infer unet config: %d channels at level %d are not a multiple of SDXL's %d-channel heads; pass the UNet config in Options.UNetConfig", c, i, sdxlHeadDim)
		}
		heads[i] = c / sdxlHeadDim
	}
	cfg["attention_head_dim"] = intOrList(heads)
	cfg["addition_embed_type"] = "text_time"
	cfg["addition_embed_type_num_heads"] = 64
	cfg["addition_time_embed_dim"] = sdxlAddTimeEmbedDim
	cfg["projection_class_embeddings_input_dim"] = add[1]
	cfg["sample_size"] = sdxlSampleSize
	return json.MarshalIndent(cfg, "", "  ")
}

// inferSDXLText2Config infers the CLIPTextModelWithProjection config of
// SDXL's OpenCLIP ViT-bigG tower from its tensors as openCLIPWithProjection
// presents them (the projection width from the projection's shape).
func inferSDXLText2Config(src safetensors.Source) ([]byte, error) {
	js, err := InferOpenCLIPTextConfig(src)
	if err != nil {
		return nil, err
	}
	var cfg map[string]any
	if err := json.Unmarshal(js, &cfg); err != nil {
		return nil, fmt.Errorf("checkpoint: infer text encoder config: %w", err)
	}
	p, err := shapeOf(src, "infer text encoder config", "text_projection.weight", 2)
	if err != nil {
		return nil, err
	}
	cfg["architectures"] = []string{"CLIPTextModelWithProjection"}
	cfg["projection_dim"] = p[0]
	return json.MarshalIndent(cfg, "", "  ")
}

// SDXLSchedulerConfig returns SDXL's training noise schedule (as
// DefaultSchedulerConfig, with leading timestep spacing) for a prediction
// type.
func SDXLSchedulerConfig(prediction string) []byte {
	var cfg map[string]any
	_ = json.Unmarshal(DefaultSchedulerConfig(prediction), &cfg) // our own JSON
	cfg["timestep_spacing"] = "leading"
	js, _ := json.MarshalIndent(cfg, "", "  ") // plain values cannot fail
	return js
}
