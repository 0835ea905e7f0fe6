package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tokenizer"
)

// Metadata keys under which WriteSingleFile stores the diffusers configs
// (when asked to) and that loadSingleFile reads before inferring them.
const (
	// MetaUNetConfig holds the UNet's diffusers config JSON.
	MetaUNetConfig = "kiln.unet_config"
	// MetaVAEConfig holds the VAE's diffusers config JSON.
	MetaVAEConfig = "kiln.vae_config"
	// MetaTextEncoderConfig holds the text encoder's transformers config JSON.
	MetaTextEncoderConfig = "kiln.text_encoder_config"
	// MetaPrediction holds "epsilon" or "v_prediction".
	MetaPrediction = "prediction_type"
)

// ignoredInsidePrefixes are tensors of community single files that are not part
// of the three components: the EMA copy of the UNet, noise schedule
// buffers, and the VAE's training loss networks.
var ignoredInsidePrefixes = []string{"first_stage_model.loss."}

func loadSingleFile(path string, opts Options) (*Model, error) {
	// Tokenizer folders beside the file serve when none is named; without
	// one an SD 1.x/2.x file uses the embedded CLIP vocabulary (see
	// Model.Tokenizer).
	// Tokenizer folders beside the file serve when none is named.
	for _, b := range []struct {
		dir  *string
		name string
	}{{&opts.TokenizerDir, "tokenizer"}, {&opts.Tokenizer2Dir, "tokenizer_2"}} {
		if d := filepath.Join(filepath.Dir(path), b.name); *b.dir == "" && findTokenizer(d) == nil {
			*b.dir = d
		}
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	m, err := FromOriginal(f, f.Metadata(), opts)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	m.Path = path
	m.closers = []io.Closer{f}
	return m, nil
}

// FromOriginal builds a Model from tensors in the original single-file
// layout (SD 1.x): it maps their names to diffusers names, takes configs
// from opts, then metadata, then infers them from the shapes, and checks
// every tensor against the configs. Without opts.TokenizerDir the
// embedded CLIP vocabulary serves (Model.EmbeddedPad). The
// Model does not own src: closing it leaves src open.
func FromOriginal(src safetensors.Source, md map[string]string, opts Options) (*Model, error) {
	family, err := DetectFamily(src.Names())
	if err != nil {
		return nil, err
	}
	if family == FamilySDXL {
		return fromSGM(src, md, opts)
	}
	m := &Model{Layout: LayoutSingleFile, Family: FamilySD, TokenizerDir: opts.TokenizerDir}
	if m.TokenizerDir != "" {
		if err := findTokenizer(m.TokenizerDir); err != nil {
			return nil, err
		}
	}
	f := src
	groups, ignored := splitByPrefix(f.Names(), PrefixOpenCLIP, PrefixUNet, PrefixVAE, PrefixCLIP)
	openNames, unetNames, vaeNames, textNames := groups[0], groups[1], groups[2], groups[3]
	m.Ignored = append(m.Ignored, ignored...)
	switch {
	case len(unetNames) == 0:
		return nil, fmt.Errorf("checkpoint: no %s* tensors: not an original-layout Stable Diffusion checkpoint (a lone component file, SDXL or another architecture?)", PrefixUNet)
	case len(vaeNames) == 0:
		return nil, fmt.Errorf("checkpoint: no %s* tensors: the file carries no VAE", PrefixVAE)
	case len(textNames) == 0 && len(openNames) == 0:
		return nil, fmt.Errorf("checkpoint: no %s* or %s* tensors: the file carries no CLIP text encoder", PrefixCLIP, PrefixOpenCLIP)
	case len(textNames) > 0 && len(openNames) > 0:
		return nil, fmt.Errorf("checkpoint: the file carries two text encoders (%s* and %s*)", PrefixCLIP, PrefixOpenCLIP)
	}

	unet, vae, lpb, levels, err := mapUNetAndVAE(f, unetNames, vaeNames)
	if err != nil {
		return nil, err
	}
	textEntries := map[string]safetensors.ViewEntry{}
	openCLIP := len(openNames) > 0
	if m.TokenizerDir == "" {
		m.EmbeddedPad = tokenizer.PadSD1
		if openCLIP {
			m.EmbeddedPad = tokenizer.PadSD2
		}
	}
	if openCLIP {
		var ignored []string
		if textEntries, ignored, err = OpenCLIPToDiffusers(f, PrefixOpenCLIP, openNames); err != nil {
			return nil, err
		}
		m.Ignored = append(m.Ignored, ignored...)
	}
	for _, n := range textNames {
		d, err := TextToDiffusers(n)
		if err != nil {
			return nil, err
		}
		if d == "" {
			continue
		}
		if prev, dup := textEntries[d]; dup {
			return nil, fmt.Errorf("checkpoint: text encoder holds both %q and %q", prev.From, PrefixCLIP+n)
		}
		textEntries[d] = safetensors.ViewEntry{From: PrefixCLIP + n}
	}
	text, err := safetensors.NewView(f, textEntries)
	if err != nil {
		return nil, err
	}

	pick := func(override []byte, key string, infer func() ([]byte, error)) ([]byte, error) {
		return pickConfig(override, md, key, infer)
	}
	// Inference names tensors as diffusers does; report them as the file does.
	textOrig := func(n string) (string, error) {
		if openCLIP {
			if o, ok := openCLIPOriginal(n); ok {
				return PrefixOpenCLIP + o, nil
			}
			return n, fmt.Errorf("no OpenCLIP name")
		}
		return PrefixCLIP + TextToOriginal(n), nil
	}
	inferLayout := Layout{UNetLayersPerBlock: lpb, VAELevels: levels}
	rename := func(err error, reverse func(string) (string, error)) error {
		var te *TensorError
		if errors.As(err, &te) {
			if o, rerr := reverse(te.Name); rerr == nil {
				te.Name = o
			}
		}
		return err
	}
	if m.UNetConfig, err = pick(opts.UNetConfig, MetaUNetConfig, func() ([]byte, error) { return InferUNetConfig(unet) }); err != nil {
		return nil, rename(err, func(n string) (string, error) { o, err := UNetToOriginal(n, inferLayout); return PrefixUNet + o, err })
	}
	if m.VAEConfig, err = pick(opts.VAEConfig, MetaVAEConfig, func() ([]byte, error) { return InferVAEConfig(vae, sdScalingFactor) }); err != nil {
		return nil, rename(err, func(n string) (string, error) { o, _, err := VAEToOriginal(n, levels); return PrefixVAE + o, err })
	}
	if m.TextEncoderConfig, err = pick(opts.TextEncoderConfig, MetaTextEncoderConfig, func() ([]byte, error) {
		if openCLIP {
			return InferOpenCLIPTextConfig(text)
		}
		return InferTextConfig(text)
	}); err != nil {
		return nil, rename(err, textOrig)
	}
	unetL, err := checkUNetAndVAE(unet, vae, m.UNetConfig, m.VAEConfig, lpb, levels)
	if err != nil {
		return nil, err
	}
	textL, err := ParseTextLayout(m.TextEncoderConfig)
	if err != nil {
		return nil, err
	}
	if err := checkTensors("text_encoder", text, textL.ExpectedTensors(), origName(text, func(n string) string {
		o, _ := textOrig(n)
		return o
	})); err != nil {
		return nil, err
	}
	if unetL.CrossAttentionDim != textL.Hidden {
		return nil, fmt.Errorf("checkpoint: the UNet attends to %d-wide text features but the text encoder is %d wide", unetL.CrossAttentionDim, textL.Hidden)
	}
	m.UNet, m.VAE, m.TextEncoder = unet, vae, text

	prediction := opts.Prediction
	if prediction == "" {
		if prediction, err = predictionFromMetadata(md); err != nil {
			return nil, fmt.Errorf("checkpoint: %w", err)
		}
	}
	m.SchedulerConfig = DefaultSchedulerConfig(prediction)

	return m, nil
}

// splitByPrefix sorts names into one group per prefix (the first that
// matches; names without it), leaving the rest, and the tensors inside the
// components that inference never uses, in ignored.
func splitByPrefix(names []string, prefixes ...string) (groups [][]string, ignored []string) {
	groups = make([][]string, len(prefixes))
next:
	for _, n := range names {
		if !hasAnyPrefix(n, ignoredInsidePrefixes) {
			for i, p := range prefixes {
				if rest, ok := strings.CutPrefix(n, p); ok {
					groups[i] = append(groups[i], rest)
					continue next
				}
			}
		}
		ignored = append(ignored, n)
	}
	return groups, ignored
}

// pickConfig returns a component's config: the caller's override, else the
// file's metadata under key, else what infer derives from the tensors.
func pickConfig(override []byte, md map[string]string, key string, infer func() ([]byte, error)) ([]byte, error) {
	if len(override) > 0 {
		return override, nil
	}
	if s, ok := md[key]; ok {
		return []byte(s), nil
	}
	return infer()
}

// checkUNetAndVAE parses the UNet and VAE configs, checks them against the
// structure the file's names imply and every tensor against the configs.
// Messages name tensors as the file does: present ones by the view's
// source, missing ones by the reverse mapping.
func checkUNetAndVAE(unet, vae *safetensors.View, unetCfg, vaeCfg []byte, lpb, levels int) (UNetLayout, error) {
	unetL, err := ParseUNetLayout(unetCfg)
	if err != nil {
		return unetL, err
	}
	vaeL, err := ParseVAELayout(vaeCfg)
	if err != nil {
		return unetL, err
	}
	if unetL.LayersPerBlock != lpb {
		return unetL, fmt.Errorf("checkpoint: unet config has layers_per_block %d, the file's blocks hold %d", unetL.LayersPerBlock, lpb)
	}
	if len(vaeL.BlockOut) != levels {
		return unetL, fmt.Errorf("checkpoint: vae config has %d levels, the file's decoder %d", len(vaeL.BlockOut), levels)
	}
	layout := Layout{UNetLayersPerBlock: lpb, UNetUpAttention: unetL.UpAttention, VAELevels: levels}
	unetOrig := func(n string) string {
		if o, err := UNetToOriginal(n, layout); err == nil {
			return PrefixUNet + o
		}
		return n
	}
	vaeOrig := func(n string) string {
		if o, _, err := VAEToOriginal(n, levels); err == nil {
			return PrefixVAE + o
		}
		return n
	}
	if err := checkTensors("unet", unet, unetL.ExpectedTensors(), origName(unet, unetOrig)); err != nil {
		return unetL, err
	}
	return unetL, checkTensors("vae", vae, vaeL.ExpectedTensors(), origName(vae, vaeOrig))
}

// origName names a presented tensor as the file does: by the view's source
// when present, else by reverse.
func origName(v interface{ Source(string) (string, bool) }, reverse func(string) string) func(string) string {
	return func(n string) string {
		if from, ok := v.Source(n); ok {
			return from
		}
		return reverse(n)
	}
}

// mapUNetAndVAE presents the original UNet and VAE keys (without their
// prefixes) of f under diffusers names, with the layers per UNet block and
// the VAE's levels that the names imply.
func mapUNetAndVAE(f safetensors.Source, unetNames, vaeNames []string) (unet, vae *safetensors.View, lpb, levels int, err error) {
	if lpb, err = originalUNetLayersPerBlock(unetNames); err != nil {
		return nil, nil, 0, 0, fmt.Errorf("checkpoint: %w", err)
	}
	unetEntries := map[string]safetensors.ViewEntry{}
	for _, n := range unetNames {
		d, err := UNetToDiffusers(n, lpb)
		if err != nil {
			return nil, nil, 0, 0, err
		}
		unetEntries[d] = safetensors.ViewEntry{From: PrefixUNet + n}
	}
	if levels, err = originalVAELevels(vaeNames); err != nil {
		return nil, nil, 0, 0, fmt.Errorf("checkpoint: %w", err)
	}
	vaeEntries := map[string]safetensors.ViewEntry{}
	for _, n := range vaeNames {
		d, reshape, err := VAEToDiffusers(n, levels)
		if err != nil {
			return nil, nil, 0, 0, err
		}
		e := safetensors.ViewEntry{From: PrefixVAE + n}
		if reshape {
			info, _ := f.Info(e.From)
			switch {
			case len(info.Shape) == 4 && info.Shape[2] == 1 && info.Shape[3] == 1:
				e.Shape = info.Shape[:2]
			case len(info.Shape) == 2:
			default:
				return nil, nil, 0, 0, fmt.Errorf("checkpoint: VAE tensor %q has shape %v, want a (C, C, 1, 1) or (C, C) attention weight", e.From, info.Shape)
			}
		}
		vaeEntries[d] = e
	}
	if unet, err = safetensors.NewView(f, unetEntries); err != nil {
		return nil, nil, 0, 0, err
	}
	if vae, err = safetensors.NewView(f, vaeEntries); err != nil {
		return nil, nil, 0, 0, err
	}
	return unet, vae, lpb, levels, nil
}

// predictionFromMetadata reads the prediction type that trainers record in
// safetensors metadata; epsilon when none is recorded.
func predictionFromMetadata(md map[string]string) (string, error) {
	for _, k := range []string{MetaPrediction, "modelspec.prediction_type"} {
		v, ok := md[k]
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "epsilon", "eps":
			return "epsilon", nil
		case "v", "v_prediction", "v-prediction", "v_pred":
			return "v_prediction", nil
		}
		return "", fmt.Errorf("metadata %s = %q is not a known prediction type", k, v)
	}
	if v, ok := md["ss_v_parameterization"]; ok {
		if b, err := strconv.ParseBool(v); err == nil && b {
			return "v_prediction", nil
		}
	}
	return "epsilon", nil
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// indexAfter returns the integer that follows prefix in name.
func indexAfter(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	i, _, ok := splitIndex(rest)
	return i, ok
}

// originalUNetLayersPerBlock derives layers_per_block from the original
// block numbering: levels = downsamplers + 1, and the output blocks hold
// levels × (layers_per_block + 1) entries.
func originalUNetLayersPerBlock(names []string) (int, error) {
	down := map[int]bool{}
	out := map[int]bool{}
	in := map[int]bool{}
	for _, n := range names {
		if i, ok := indexAfter(n, "input_blocks."); ok {
			in[i] = true
			if strings.HasSuffix(n, ".0.op.weight") || strings.HasSuffix(n, ".0.op.bias") {
				down[i] = true
			}
		}
		if i, ok := indexAfter(n, "output_blocks."); ok {
			out[i] = true
		}
	}
	levels := len(down) + 1
	if len(out) == 0 || len(out)%levels != 0 || len(out)/levels < 2 {
		return 0, fmt.Errorf("UNet has %d output blocks for %d levels: cannot work out layers per block", len(out), levels)
	}
	lpb := len(out)/levels - 1
	for i := 0; i < len(out); i++ {
		if !out[i] {
			return 0, fmt.Errorf("UNet has no tensors for %soutput_blocks.%d", PrefixUNet, i)
		}
	}
	for i := 0; i < levels*(lpb+1); i++ {
		if !in[i] {
			return 0, fmt.Errorf("UNet has no tensors for %sinput_blocks.%d", PrefixUNet, i)
		}
	}
	return lpb, nil
}

// originalVAELevels counts the original decoder's up levels.
func originalVAELevels(names []string) (int, error) {
	up := map[int]bool{}
	for _, n := range names {
		if i, ok := indexAfter(n, "decoder.up."); ok && i < 64 {
			up[i] = true
		}
	}
	for i := 0; i < len(up); i++ {
		if !up[i] {
			return 0, fmt.Errorf("VAE has no tensors for %sdecoder.up.%d", PrefixVAE, i)
		}
	}
	if len(up) == 0 {
		return 0, fmt.Errorf("VAE has no %sdecoder.up.* tensors", PrefixVAE)
	}
	return len(up), nil
}

// WriteOptions adjust WriteSingleFile.
type WriteOptions struct {
	// EmbedConfigs stores the UNet, VAE and text encoder configs in the
	// file's metadata so that a later Load needs no inference.
	EmbedConfigs bool
	// DType converts floating-point weights: "" keeps them, "F16", "BF16"
	// or "F32" converts.
	DType string
}

// WriteSingleFile writes a model in the original single-file layout
// (model.diffusion_model.*, first_stage_model.*,
// cond_stage_model.transformer.text_model.*), as SD 1.x checkpoints are
// distributed. The scheduler's prediction type is recorded in metadata.
func WriteSingleFile(path string, m *Model, opts WriteOptions) error {
	unetL, err := ParseUNetLayout(m.UNetConfig)
	if err != nil {
		return err
	}
	vaeL, err := ParseVAELayout(m.VAEConfig)
	if err != nil {
		return err
	}
	textL, err := ParseTextLayout(m.TextEncoderConfig)
	if err != nil {
		return err
	}
	switch opts.DType {
	case "", "F32", "F16", "BF16":
	default:
		return fmt.Errorf("checkpoint: write: dtype %q: want F32, F16 or BF16", opts.DType)
	}
	layout := Layout{UNetLayersPerBlock: unetL.LayersPerBlock, UNetUpAttention: unetL.UpAttention, VAELevels: len(vaeL.BlockOut)}
	var out []safetensors.WriteTensor
	add := func(src safetensors.Source, name, orig string, shape []int) error {
		t, err := safetensors.FromSource(src, name, orig)
		if err != nil {
			return fmt.Errorf("checkpoint: write %s: %w", orig, err)
		}
		if shape != nil {
			t.Shape = shape
		}
		if opts.DType != "" && opts.DType != t.DType && safetensors.DTypeSize(t.DType) > 0 && isFloat(t.DType) {
			v, _, err := safetensors.Float32(src, name)
			if err != nil {
				return fmt.Errorf("checkpoint: write %s: %w", orig, err)
			}
			switch opts.DType {
			case "F16":
				t = safetensors.F16Tensor(orig, t.Shape, v)
			case "BF16":
				t = safetensors.BF16Tensor(orig, t.Shape, v)
			default:
				t = safetensors.F32Tensor(orig, t.Shape, v)
			}
		}
		out = append(out, t)
		return nil
	}
	for _, n := range m.UNet.Names() {
		o, err := UNetToOriginal(n, layout)
		if err != nil {
			return err
		}
		if err := add(m.UNet, n, PrefixUNet+o, nil); err != nil {
			return err
		}
	}
	for _, n := range m.VAE.Names() {
		o, reshape, err := VAEToOriginal(n, layout.VAELevels)
		if err != nil {
			return err
		}
		var shape []int
		if info, _ := m.VAE.Info(n); reshape && len(info.Shape) == 2 {
			shape = append(info.Shape, 1, 1)
		}
		if err := add(m.VAE, n, PrefixVAE+o, shape); err != nil {
			return err
		}
	}
	for _, n := range m.TextEncoder.Names() {
		if err := add(m.TextEncoder, n, PrefixCLIP+TextToOriginal(n), nil); err != nil {
			return err
		}
	}
	ids := make([]int64, textL.Positions)
	for i := range ids {
		ids[i] = int64(i)
	}
	out = append(out, safetensors.I64Tensor(PrefixCLIP+"text_model.embeddings.position_ids", []int{1, textL.Positions}, ids))
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })

	md := map[string]string{"format": "pt"}
	var sched struct {
		Prediction string `json:"prediction_type"`
	}
	if len(m.SchedulerConfig) > 0 {
		if err := json.Unmarshal(m.SchedulerConfig, &sched); err != nil {
			return fmt.Errorf("checkpoint: write: scheduler config: %w", err)
		}
	}
	if sched.Prediction != "" {
		md[MetaPrediction] = sched.Prediction
	}
	if opts.EmbedConfigs {
		md[MetaUNetConfig] = string(m.UNetConfig)
		md[MetaVAEConfig] = string(m.VAEConfig)
		md[MetaTextEncoderConfig] = string(m.TextEncoderConfig)
	}
	if err := safetensors.WriteFile(path, out, md); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

func isFloat(dtype string) bool {
	switch dtype {
	case "F64", "F32", "F16", "BF16":
		return true
	}
	return false
}
