package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kiln-project/kiln/core/safetensors"
)

// component is a model_index.json entry: library and class.
type component [2]string

// Components each pipeline class needs (optional ones may be [null, null]).
var (
	sdComponents = map[string]component{
		"unet":         {"diffusers", "UNet2DConditionModel"},
		"vae":          {"diffusers", "AutoencoderKL"},
		"text_encoder": {"transformers", "CLIPTextModel"},
		"tokenizer":    {"transformers", "CLIPTokenizer"},
	}
	sdxlComponents = map[string]component{
		"unet":           {"diffusers", "UNet2DConditionModel"},
		"vae":            {"diffusers", "AutoencoderKL"},
		"text_encoder_2": {"transformers", "CLIPTextModelWithProjection"},
		"tokenizer_2":    {"transformers", "CLIPTokenizer"},
	}
	// sdxlOptional: the refiner has no first text encoder.
	sdxlOptional = map[string]component{
		"text_encoder": {"transformers", "CLIPTextModel"},
		"tokenizer":    {"transformers", "CLIPTokenizer"},
	}
)

// supportedPipelines maps the pipeline classes whose components this
// package loads to their family.
var supportedPipelines = map[string]string{
	"StableDiffusionPipeline":          FamilySD,
	"StableDiffusionImg2ImgPipeline":   FamilySD,
	"StableDiffusionInpaintPipeline":   FamilySD,
	"StableDiffusionXLPipeline":        FamilySDXL,
	"StableDiffusionXLImg2ImgPipeline": FamilySDXL,
	"StableDiffusionXLInpaintPipeline": FamilySDXL,
}

// indexComponent reads a component entry: present reports a [lib, class]
// pair, absent a missing key or [null, null].
func indexComponent(index map[string]json.RawMessage, dir, comp string) (c component, present bool, err error) {
	raw, ok := index[comp]
	if !ok {
		return c, false, nil
	}
	var got []*string
	if err := json.Unmarshal(raw, &got); err != nil || len(got) != 2 {
		return c, false, fmt.Errorf("checkpoint: %s/model_index.json: component %q malformed", dir, comp)
	}
	if got[0] == nil && got[1] == nil {
		return c, false, nil
	}
	if got[0] == nil || got[1] == nil {
		return c, false, fmt.Errorf("checkpoint: %s/model_index.json: component %q malformed", dir, comp)
	}
	return component{*got[0], *got[1]}, true, nil
}

func loadDiffusers(dir string, opts Options) (*Model, error) {
	js, err := os.ReadFile(filepath.Join(dir, "model_index.json"))
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %s is not a diffusers folder: %w", dir, err)
	}
	var index map[string]json.RawMessage
	if err := json.Unmarshal(js, &index); err != nil || index == nil {
		return nil, fmt.Errorf("checkpoint: %s/model_index.json: not a JSON object", dir)
	}
	var class string
	if err := json.Unmarshal(index["_class_name"], &class); err != nil {
		return nil, fmt.Errorf("checkpoint: %s/model_index.json: missing _class_name", dir)
	}
	family, known := supportedPipelines[class]
	if !known {
		names := slices.Sorted(maps.Keys(supportedPipelines))
		return nil, fmt.Errorf("checkpoint: %s: pipeline %q is not supported (want one of %v)", dir, class, names)
	}
	required, optional := sdComponents, map[string]component(nil)
	if family == FamilySDXL {
		required, optional = sdxlComponents, sdxlOptional
	}
	present := map[string]bool{}
	for _, set := range []map[string]component{required, optional} {
		for _, comp := range slices.Sorted(maps.Keys(set)) {
			want := set[comp]
			got, ok, err := indexComponent(index, dir, comp)
			if err != nil {
				return nil, err
			}
			if !ok {
				if _, req := required[comp]; req {
					return nil, fmt.Errorf("checkpoint: %s/model_index.json: component %q missing or malformed", dir, comp)
				}
				continue
			}
			if got[1] != want[1] {
				return nil, fmt.Errorf("checkpoint: %s: component %s is %s.%s, only %s.%s is supported", dir, comp, got[0], got[1], want[0], want[1])
			}
			present[comp] = true
		}
	}
	if family == FamilySDXL && present["text_encoder"] != present["tokenizer"] {
		return nil, fmt.Errorf("checkpoint: %s: text_encoder and tokenizer must both be present or both null", dir)
	}
	m := &Model{Path: dir, Layout: LayoutDiffusers, Family: family}
	fail := func(err error) (*Model, error) {
		m.Close()
		return nil, err
	}
	if family == FamilySDXL {
		if m.ForceZerosForEmptyPrompt, err = indexBool(index, "force_zeros_for_empty_prompt", true); err != nil {
			return fail(fmt.Errorf("checkpoint: %s/model_index.json: %w", dir, err))
		}
		if m.RequiresAestheticsScore, err = indexBool(index, "requires_aesthetics_score", false); err != nil {
			return fail(fmt.Errorf("checkpoint: %s/model_index.json: %w", dir, err))
		}
	}
	read := func(rel string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			return nil, fmt.Errorf("checkpoint: %w", err)
		}
		return b, nil
	}
	if m.UNetConfig, err = read("unet/config.json"); err != nil {
		return fail(err)
	}
	if m.VAEConfig, err = read("vae/config.json"); err != nil {
		return fail(err)
	}
	if m.SchedulerConfig, err = read("scheduler/scheduler_config.json"); err != nil {
		return fail(err)
	}
	if opts.Prediction != "" {
		if m.SchedulerConfig, err = withPrediction(m.SchedulerConfig, opts.Prediction); err != nil {
			return fail(err)
		}
	}
	unetL, err := ParseUNetLayout(m.UNetConfig)
	if err != nil {
		return fail(err)
	}
	vaeL, err := ParseVAELayout(m.VAEConfig)
	if err != nil {
		return fail(err)
	}
	unet, err := m.openComponent(dir, "unet", "diffusion_pytorch_model", opts.Variant)
	if err != nil {
		return fail(err)
	}
	vae, err := m.openComponent(dir, "vae", "diffusion_pytorch_model", opts.Variant)
	if err != nil {
		return fail(err)
	}
	same := func(n string) string { return n }
	if err := checkTensors("unet", unet, unetL.ExpectedTensors(), same); err != nil {
		return fail(err)
	}
	m.UNet = unet
	if err := checkTensors("vae", vae, vaeL.ExpectedTensors(), same); err != nil {
		return fail(err)
	}
	m.VAE = vae
	var textL, text2L TextLayout
	if present["text_encoder"] || family == FamilySD {
		m.TokenizerDir = filepath.Join(dir, "tokenizer")
		if opts.TokenizerDir != "" {
			m.TokenizerDir = opts.TokenizerDir
		}
		if err := findTokenizer(m.TokenizerDir); err != nil {
			return fail(err)
		}
		if m.TextEncoderConfig, m.TextEncoder, textL, err = m.loadText(dir, "text_encoder", opts.Variant); err != nil {
			return fail(err)
		}
		if textL.Projection != 0 {
			return fail(fmt.Errorf("checkpoint: %s: text_encoder/config.json describes a CLIPTextModelWithProjection, model_index.json a CLIPTextModel", dir))
		}
	}
	if family == FamilySD {
		return m, nil
	}
	m.Tokenizer2Dir = filepath.Join(dir, "tokenizer_2")
	if err := findTokenizer(m.Tokenizer2Dir); err != nil {
		return fail(err)
	}
	if m.TextEncoder2Config, m.TextEncoder2, text2L, err = m.loadText(dir, "text_encoder_2", opts.Variant); err != nil {
		return fail(err)
	}
	if err := checkSDXL(unetL, textL, text2L, m.TextEncoder != nil); err != nil {
		return fail(fmt.Errorf("%w (folder %s)", err, dir))
	}
	return m, nil
}

// indexBool reads an optional boolean of model_index.json.
func indexBool(index map[string]json.RawMessage, key string, def bool) (bool, error) {
	raw, ok := index[key]
	if !ok || string(raw) == "null" {
		return def, nil
	}
	var v bool
	if err := json.Unmarshal(raw, &v); err != nil {
		return false, fmt.Errorf("%s: want a boolean, got %s", key, raw)
	}
	return v, nil
}

// loadText reads a text encoder folder's config and weights and checks
// them against each other.
func (m *Model) loadText(dir, folder, variant string) ([]byte, safetensors.Source, TextLayout, error) {
	js, err := os.ReadFile(filepath.Join(dir, folder, "config.json"))
	if err != nil {
		return nil, nil, TextLayout{}, fmt.Errorf("checkpoint: %w", err)
	}
	l, err := ParseTextLayout(js)
	if err != nil {
		return nil, nil, l, err
	}
	raw, err := m.openComponent(dir, folder, "model", variant)
	if err != nil {
		return nil, nil, l, err
	}
	view, err := textView(raw)
	if err != nil {
		return nil, nil, l, err
	}
	if err := checkTensors(folder, view, l.ExpectedTensors(), func(n string) string {
		if from, ok := view.(*safetensors.View).Source(n); ok {
			return from
		}
		return n
	}); err != nil {
		return nil, nil, l, err
	}
	return js, view, l, nil
}

// textView presents a CLIPTextModel state dict without the "text_model."
// prefix and without the position_ids buffer.
func textView(src safetensors.Source) (safetensors.Source, error) {
	entries := map[string]safetensors.ViewEntry{}
	for _, n := range src.Names() {
		name := strings.TrimPrefix(n, "text_model.")
		if name == "embeddings.position_ids" {
			continue
		}
		if prev, dup := entries[name]; dup {
			return nil, fmt.Errorf("checkpoint: text encoder holds both %q and %q", prev.From, n)
		}
		entries[name] = safetensors.ViewEntry{From: n}
	}
	return safetensors.NewView(src, entries)
}

// openComponent opens a component's weights: the variant file or sharded
// index when a variant is asked for and present, else the plain ones, else
// (with no variant asked for) an fp16 variant.
func (m *Model) openComponent(dir, comp, base, variant string) (safetensors.Source, error) {
	folder := filepath.Join(dir, comp)
	type cand struct{ file, index string }
	plain := cand{base + ".safetensors", base + ".safetensors.index.json"}
	variantOf := func(v string) cand {
		return cand{base + "." + v + ".safetensors", base + ".safetensors.index." + v + ".json"}
	}
	cands := []cand{plain}
	if variant != "" {
		cands = []cand{variantOf(variant), plain}
	} else {
		cands = append(cands, variantOf("fp16"))
	}
	for _, c := range cands {
		if p := filepath.Join(folder, c.file); exists(p) {
			f, err := safetensors.Open(p)
			if err != nil {
				return nil, fmt.Errorf("checkpoint: %s: %w", comp, err)
			}
			m.closers = append(m.closers, f)
			return f, nil
		}
		if p := filepath.Join(folder, c.index); exists(p) {
			s, err := safetensors.OpenIndex(p)
			if err != nil {
				return nil, fmt.Errorf("checkpoint: %s: %w", comp, err)
			}
			m.closers = append(m.closers, s)
			return s, nil
		}
	}
	if exists(filepath.Join(folder, base+".bin")) {
		return nil, fmt.Errorf("checkpoint: %s: only pickle weights (%s.bin) found; convert them to safetensors", comp, base)
	}
	return nil, fmt.Errorf("checkpoint: %s: no %s.safetensors (or sharded index) in %s", comp, base, folder)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil || !errors.Is(err, os.ErrNotExist)
}
