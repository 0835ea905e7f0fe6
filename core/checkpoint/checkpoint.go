// Package checkpoint loads a Stable Diffusion model from either layout it
// is distributed in — a diffusers folder (model_index.json with unet/, vae/,
// text_encoder/, tokenizer/ and scheduler/) or a single-file original
// (CompVis/LDM) checkpoint — and presents both the same way: diffusers
// configs as JSON and each component's tensors under diffusers names. It
// also writes a diffusers model back out in the single-file layout.
package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tokenizer"
)

// Layout names of a loaded model.
const (
	// LayoutDiffusers is a diffusers model folder.
	LayoutDiffusers = "diffusers"
	// LayoutSingleFile is one original-layout (CompVis/LDM) safetensors file.
	LayoutSingleFile = "single-file"
)

// Options adjust how Load reads a model.
type Options struct {
	// TokenizerDir is the tokenizer folder for a single-file checkpoint;
	// when empty, a tokenizer/ folder beside the file is used.
	TokenizerDir string
	// Variant selects weight files such as "*.fp16.safetensors" in a
	// diffusers folder; plain files are used when the variant is absent.
	Variant string
	// Prediction overrides the scheduler's prediction type: "epsilon" or
	// "v_prediction" ("" keeps the config's, the file's metadata, or epsilon).
	Prediction string
	// TextEncoderConfig, UNetConfig and VAEConfig replace the configs a
	// single-file checkpoint would otherwise take from its metadata or
	// infer from tensor shapes; TextEncoder2Config likewise for SDXL's
	// second text encoder.
	TextEncoderConfig, UNetConfig, VAEConfig, TextEncoder2Config []byte
	// Tokenizer2Dir is SDXL's second tokenizer folder for a single file;
	// when empty, a tokenizer_2/ folder beside the file, else TokenizerDir
	// (padding with "!", as SDXL's second tokenizer does).
	Tokenizer2Dir string
}

// Model families a checkpoint can hold.
const (
	// FamilySD is Stable Diffusion 1.x/2.x: one CLIP text encoder.
	FamilySD = "sd"
	// FamilySDXL is SDXL, base or refiner: two text encoders (the refiner
	// only the second), added text_time conditioning.
	FamilySDXL = "sdxl"
)

// Model is a loaded checkpoint: configs in diffusers/transformers JSON and
// each component's tensors under diffusers names.
type Model struct {
	Path         string
	Layout       string // LayoutDiffusers or LayoutSingleFile
	TokenizerDir string // folder with tokenizer.json or vocab.json + merges.txt
	// EmbeddedPad, when TokenizerDir is empty (a single file with no
	// tokenizer beside it), selects the embedded CLIP vocabulary padded
	// with this token (tokenizer.PadSD1 or PadSD2).
	EmbeddedPad string

	// Family is FamilySD or FamilySDXL.
	Family string

	TextEncoderConfig, UNetConfig, VAEConfig, SchedulerConfig []byte

	// TextEncoder tensors are named as transformers' CLIPTextModel names
	// them without the "text_model." prefix (e.g. "embeddings.token_embedding.weight").
	// An SDXL refiner has none (nil, with TextEncoderConfig and
	// TokenizerDir empty).
	TextEncoder, UNet, VAE safetensors.Source

	// SDXL's second text encoder, a CLIPTextModelWithProjection named like
	// TextEncoder plus "text_projection.weight" (projection_dim, hidden);
	// its config and tokenizer folder. Tokenizer2Pad, when set, replaces
	// the folder's padding token (a single file borrowing the first
	// tokenizer's folder). Nil and empty for FamilySD.
	TextEncoder2                 safetensors.Source
	TextEncoder2Config           []byte
	Tokenizer2Dir, Tokenizer2Pad string
	// ForceZerosForEmptyPrompt (SDXL base: true) makes an absent negative
	// prompt zero conditioning instead of the encoding of "";
	// RequiresAestheticsScore (SDXL refiner) replaces the target size in
	// the micro-conditioning by an aesthetic score. Both come from
	// model_index.json or, for single files, from the family.
	ForceZerosForEmptyPrompt, RequiresAestheticsScore bool

	// Ignored lists tensors of a single file outside the three components
	// (EMA copies, noise schedule buffers) that were left unused.
	Ignored []string

	closers []io.Closer
}

// Tokenizer loads the model's tokenizer: its folder's, or the embedded
// CLIP vocabulary.
func (m *Model) Tokenizer() (*tokenizer.Tokenizer, error) {
	if m.TokenizerDir != "" {
		return tokenizer.Load(m.TokenizerDir)
	}
	if m.EmbeddedPad == "" {
		return nil, fmt.Errorf("checkpoint: %s has no tokenizer", m.Path)
	}
	return tokenizer.CLIP(m.EmbeddedPad)
}

// Tokenizer2 loads SDXL's second tokenizer: its folder's (padding with
// Tokenizer2Pad when set), or the embedded CLIP vocabulary padding with
// Tokenizer2Pad ("!" by default, as OpenCLIP does).
func (m *Model) Tokenizer2() (*tokenizer.Tokenizer, error) {
	if m.Tokenizer2Dir == "" {
		pad := m.Tokenizer2Pad
		if pad == "" {
			pad = tokenizer.PadSD2
		}
		return tokenizer.CLIP(pad)
	}
	t, err := tokenizer.Load(m.Tokenizer2Dir)
	if err != nil || m.Tokenizer2Pad == "" {
		return t, err
	}
	return t.WithPad(m.Tokenizer2Pad)
}

// Close releases the memory maps behind the model's sources.
func (m *Model) Close() error {
	var errs []error
	for _, c := range m.closers {
		errs = append(errs, c.Close())
	}
	m.closers = nil
	return errors.Join(errs...)
}

// Load opens a diffusers folder or a single-file original checkpoint.
func Load(path string, opts Options) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	switch opts.Prediction {
	case "", "epsilon", "v_prediction":
	default:
		return nil, fmt.Errorf("checkpoint: prediction %q: want epsilon or v_prediction", opts.Prediction)
	}
	if st.IsDir() {
		return loadDiffusers(path, opts)
	}
	switch {
	case strings.HasSuffix(path, ".safetensors"):
		return loadSingleFile(path, opts)
	case strings.HasSuffix(path, ".ckpt") || strings.HasSuffix(path, ".pt") || strings.HasSuffix(path, ".pth") || strings.HasSuffix(path, ".bin"):
		return nil, fmt.Errorf("checkpoint: %s is a pickle file; only safetensors weights are loaded (convert it to .safetensors first)", path)
	}
	return nil, fmt.Errorf("checkpoint: %s is neither a diffusers folder nor a .safetensors file", path)
}

// findTokenizer checks that dir holds a CLIP tokenizer in one of the two
// accepted forms.
func findTokenizer(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err == nil {
		return nil
	}
	_, e1 := os.Stat(filepath.Join(dir, "vocab.json"))
	_, e2 := os.Stat(filepath.Join(dir, "merges.txt"))
	if e1 == nil && e2 == nil {
		return nil
	}
	return fmt.Errorf("checkpoint: tokenizer folder %s holds neither tokenizer.json nor vocab.json + merges.txt", dir)
}

// checkTensors compares a component's tensors with those its config
// requires: the first missing tensor, unexpected tensor, tensor of the
// wrong shape or of a non-floating-point dtype is named. display maps a
// presented name to the name in the file, for messages.
func checkTensors(what string, src safetensors.Source, want []TensorSpec, display func(string) string) error {
	wantSet := make(map[string]bool, len(want))
	var missing []string
	for _, w := range want {
		wantSet[w.Name] = true
		info, ok := src.Info(w.Name)
		if !ok {
			missing = append(missing, display(w.Name))
			continue
		}
		if !slices.Equal(info.Shape, w.Shape) {
			return &TensorError{What: what, Name: display(w.Name), Problem: fmt.Sprintf("has shape %v, the config needs %v", info.Shape, w.Shape)}
		}
		switch info.DType {
		case "F32", "F16", "BF16":
		default:
			return &TensorError{What: what, Name: display(w.Name), Problem: fmt.Sprintf("has dtype %s, want F32, F16 or BF16", info.DType)}
		}
	}
	var extra []string
	for _, n := range src.Names() {
		if !wantSet[n] {
			extra = append(extra, display(n))
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	more := func(list []string) string {
		if len(list) > 1 {
			return fmt.Sprintf(" (and %d more)", len(list)-1)
		}
		return ""
	}
	switch {
	case len(missing) > 0:
		return fmt.Errorf("checkpoint: %s: missing tensor %q%s", what, missing[0], more(missing))
	case len(extra) > 0:
		return fmt.Errorf("checkpoint: %s: unexpected tensor %q%s", what, extra[0], more(extra))
	}
	return nil
}

// withPrediction returns the scheduler config with prediction_type set.
func withPrediction(js []byte, prediction string) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil || m == nil {
		return nil, fmt.Errorf("checkpoint: scheduler config is not a JSON object")
	}
	m["prediction_type"] = prediction
	return json.MarshalIndent(m, "", "  ")
}
