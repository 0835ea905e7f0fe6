package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kiln-project/kiln/core/safetensors"
)

// supportedComponents names the class each component must have in
// model_index.json.
var supportedComponents = map[string][2]string{
	"unet":         {"diffusers", "UNet2DConditionModel"},
	"vae":          {"diffusers", "AutoencoderKL"},
	"text_encoder": {"transformers", "CLIPTextModel"},
	"tokenizer":    {"transformers", "CLIPTokenizer"},
}

// supportedPipelines are the pipeline classes whose components this
// package loads.
var supportedPipelines = []string{"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"}

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
	known := false
	for _, p := range supportedPipelines {
		known = known || p == class
	}
	if !known {
		return nil, fmt.Errorf("checkpoint: %s: pipeline %q is not supported (want one of %v)", dir, class, supportedPipelines)
	}
	for comp, want := range supportedComponents {
		var got []*string
		if err := json.Unmarshal(index[comp], &got); err != nil || len(got) != 2 || got[0] == nil || got[1] == nil {
			return nil, fmt.Errorf("checkpoint: %s/model_index.json: component %q missing or malformed", dir, comp)
		}
		if *got[1] != want[1] {
			return nil, fmt.Errorf("checkpoint: %s: component %s is %s.%s, only %s.%s is supported", dir, comp, *got[0], *got[1], want[0], want[1])
		}
	}
	m := &Model{Path: dir, Layout: LayoutDiffusers}
	fail := func(err error) (*Model, error) {
		m.Close()
		return nil, err
	}
	m.TokenizerDir = filepath.Join(dir, "tokenizer")
	if opts.TokenizerDir != "" {
		m.TokenizerDir = opts.TokenizerDir
	}
	if err := findTokenizer(m.TokenizerDir); err != nil {
		return fail(err)
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
	if m.TextEncoderConfig, err = read("text_encoder/config.json"); err != nil {
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
	textL, err := ParseTextLayout(m.TextEncoderConfig)
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
	te, err := m.openComponent(dir, "text_encoder", "model", opts.Variant)
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
	if m.TextEncoder, err = textView(te); err != nil {
		return fail(err)
	}
	if err := checkTensors("text_encoder", m.TextEncoder, textL.ExpectedTensors(), func(n string) string {
		if from, ok := m.TextEncoder.(*safetensors.View).Source(n); ok {
			return from
		}
		return n
	}); err != nil {
		return fail(err)
	}
	return m, nil
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
