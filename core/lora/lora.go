// Package lora reads low-rank adapters (LoRA) and textual-inversion
// embeddings and applies adapters to a model per batch row, unmerged, so
// that jobs with different LoRAs (or none) share one batch.
//
// Formats: the kohya/AUTOMATIC1111 layout (lora_unet_*, lora_te_*,
// lora_te1_*/lora_te2_* for SDXL, with lora_down/lora_up, .alpha and
// optional dora_scale; LyCORIS LoCon convolutions are the same keys on conv
// layers), and the diffusers/PEFT layout (unet./text_encoder./
// text_encoder_2. prefixes with lora_A/lora_B, or lora.down/lora.up). Key
// names are matched against the model's actual module list, and every
// factor's shape against its module; the first key that does not fit is
// named in the error.
package lora

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/kiln-project/kiln/core/backend"

	"github.com/kiln-project/kiln/core/model/nn"
	"github.com/kiln-project/kiln/core/safetensors"
)

// Namespaces of a model's adaptable modules.
const (
	UNet         = "unet" // the denoiser
	TextEncoder  = "te1"  // the (first) text encoder
	TextEncoder2 = "te2"  // SDXL's second text encoder
)

// Modules lists a model's adaptable layers per namespace.
type Modules map[string][]nn.Module

// Factor is the low-rank update of one module: ΔW = Scale · Up · Down, with
// Down (Rank, In) or (Rank, Cin, KH, KW) and Up (Out, Rank) (or
// (Out, Rank, 1, 1)).
type Factor struct {
	Namespace, Module string
	Down, Up          []float32
	DownShape         []int
	Out, Rank         int
	Scale             float32
	// Base is the module's shape in the model.
	Base []int
	// Magnitude is DoRA's magnitude vector m (one value per output
	// feature, kohya's dora_scale / PEFT's lora_magnitude_vector); nil for
	// a plain LoRA. Such a factor is weight-decomposed: W' = m ·
	// (W + s·ΔW) / ‖W + s·ΔW‖ with the norm over each output row, which the
	// low-rank products of Install cannot express: it is applied by Merge.
	Magnitude []float32

	mu  sync.Mutex
	dev map[backend.Backend]devFactor // uploads per backend (see uploaded)
}

// Conv reports whether the factor adapts a convolution.
func (f *Factor) Conv() bool { return len(f.Base) == 4 }

// In is the size of one input row of Down (In, or Cin·KH·KW).
func (f *Factor) In() int { return len(f.Down) / f.Rank }

// LoRA is one parsed adapter file.
type LoRA struct {
	// Hash is the file's content hash (hex SHA-256) when the caller set
	// it; A1111 lists its first 12 digits in "Lora hashes".
	Hash string
	// Factors by namespace, each sorted by module name.
	Factors map[string][]*Factor
}

// Count returns the number of adapted modules.
func (l *LoRA) Count() int {
	n := 0
	for _, fs := range l.Factors {
		n += len(fs)
	}
	return n
}

// DoRA reports whether any of the LoRA's factors in namespace ns is
// weight-decomposed (has a Magnitude); ns "" asks about every namespace.
func (l *LoRA) DoRA(ns string) bool {
	for n, fs := range l.Factors {
		if ns != "" && n != ns {
			continue
		}
		for _, f := range fs {
			if f.Magnitude != nil {
				return true
			}
		}
	}
	return false
}

// HasTextEncoder reports whether the LoRA adapts a text encoder.
func (l *LoRA) HasTextEncoder() bool {
	return len(l.Factors[TextEncoder]) > 0 || len(l.Factors[TextEncoder2]) > 0
}

// part is what one file key contributes to a module's factor.
type part struct {
	down, up, alpha, dora string
}

// Parse reads a LoRA from src and checks it against the model's modules.
func Parse(src safetensors.Source, mods Modules) (*LoRA, error) {
	names := src.Names()
	if len(names) == 0 {
		return nil, fmt.Errorf("lora: the file holds no tensors")
	}
	index := moduleIndex(mods)
	parts := map[[2]string]*part{}
	var order [][2]string
	for _, key := range names {
		ns, mod, kind, err := classify(key, index)
		if err != nil {
			return nil, err
		}
		id := [2]string{ns, mod}
		p := parts[id]
		if p == nil {
			p = &part{}
			parts[id] = p
			order = append(order, id)
		}
		switch kind {
		case "down":
			p.down = key
		case "up":
			p.up = key
		case "alpha":
			p.alpha = key
		case "dora":
			p.dora = key
		}
	}
	l := &LoRA{Factors: map[string][]*Factor{}}
	for _, id := range order {
		f, err := load(src, id[0], id[1], parts[id], index.byPath[id[0]][id[1]])
		if err != nil {
			return nil, err
		}
		l.Factors[id[0]] = append(l.Factors[id[0]], f)
	}
	for ns := range l.Factors {
		sort.Slice(l.Factors[ns], func(i, j int) bool { return l.Factors[ns][i].Module < l.Factors[ns][j].Module })
	}
	return l, nil
}

// modIndex holds, per namespace, the modules by path and the paths by
// their kohya spelling.
type modIndex struct {
	byPath  map[string]map[string]nn.Module
	byKohya map[string]map[string]string
}

// moduleIndex indexes mods by path and by kohya spelling: a kohya module
// name (after its lora_unet_/lora_te_ prefix) is the module path with every
// dot replaced by an underscore.
func moduleIndex(mods Modules) modIndex {
	idx := modIndex{byPath: map[string]map[string]nn.Module{}, byKohya: map[string]map[string]string{}}
	for ns, list := range mods {
		m := map[string]nn.Module{}
		k := map[string]string{}
		for _, mod := range list {
			m[mod.Name] = mod
			k[strings.ReplaceAll(mod.Name, ".", "_")] = mod.Name
			// transformers 5 saves CLIP text models without the
			// "text_model." level: accept both spellings
			if short, ok := strings.CutPrefix(mod.Name, "text_model."); ok {
				m[short] = mod
				k[strings.ReplaceAll(short, ".", "_")] = mod.Name
			}
			for _, a := range mod.Aliases {
				k[strings.ReplaceAll(a, ".", "_")] = mod.Name
			}
		}
		idx.byPath[ns], idx.byKohya[ns] = m, k
	}
	return idx
}

var kohyaPrefixes = []struct{ prefix, ns string }{
	{"lora_unet_", UNet},
	{"lora_te1_", TextEncoder},
	{"lora_te2_", TextEncoder2},
	{"lora_te_", TextEncoder},
}

var peftPrefixes = []struct{ prefix, ns string }{
	{"unet.", UNet},
	{"text_encoder_2.", TextEncoder2},
	{"text_encoder.", TextEncoder},
}

var suffixes = []struct{ suffix, kind string }{
	{".lora_down.weight", "down"},
	{".lora_up.weight", "up"},
	{".lora_A.weight", "down"},
	{".lora_B.weight", "up"},
	{".lora.down.weight", "down"},
	{".lora.up.weight", "up"},
	{".alpha", "alpha"},
	{".dora_scale", "dora"},
	{".lora_magnitude_vector", "dora"},
	{".lora_magnitude_vector.weight", "dora"},
}

// unsupported names LyCORIS factorisations this package does not apply.
var unsupported = []string{".lora_mid.", ".hada_", ".lokr_", ".oft_", ".bias_indices"}

// classify splits a key into namespace, module path and kind.
func classify(key string, idx modIndex) (ns, mod, kind string, err error) {
	for _, u := range unsupported {
		if strings.Contains(key, u) {
			return "", "", "", fmt.Errorf("lora: key %q: this LyCORIS variant (%s) is not supported; use LoRA or LoCon", key, strings.Trim(u, "._"))
		}
	}
	if strings.HasSuffix(key, ".diff") || strings.HasSuffix(key, ".diff_b") {
		return "", "", "", fmt.Errorf("lora: key %q: full weight differences (LyCORIS diff) are not supported; use LoRA or LoCon", key)
	}
	rest := ""
	for _, s := range suffixes {
		if r, ok := strings.CutSuffix(key, s.suffix); ok {
			rest, kind = r, s.kind
			break
		}
	}
	if kind == "" {
		return "", "", "", fmt.Errorf("lora: key %q is not a LoRA tensor (want lora_down/lora_up, lora_A/lora_B, alpha or dora_scale)", key)
	}
	for _, p := range kohyaPrefixes {
		if name, ok := strings.CutPrefix(rest, p.prefix); ok {
			path, found := idx.byKohya[p.ns][name]
			if !found {
				return "", "", "", fmt.Errorf("lora: key %q matches no %s module of this model", key, nsLabel(p.ns))
			}
			return p.ns, path, kind, nil
		}
	}
	for _, p := range peftPrefixes {
		if path, ok := strings.CutPrefix(rest, p.prefix); ok {
			mod, found := idx.byPath[p.ns][path]
			if !found {
				return "", "", "", fmt.Errorf("lora: key %q matches no %s module of this model", key, nsLabel(p.ns))
			}
			return p.ns, mod.Name, kind, nil
		}
	}
	// PEFT files saved from a bare UNet carry no prefix.
	if _, found := idx.byPath[UNet][rest]; found {
		return UNet, rest, kind, nil
	}
	return "", "", "", fmt.Errorf("lora: key %q matches no known layout (kohya lora_unet_/lora_te_ or diffusers unet./text_encoder.) and no module of this model", key)
}

func nsLabel(ns string) string {
	switch ns {
	case UNet:
		return "UNet"
	case TextEncoder:
		return "text encoder"
	case TextEncoder2:
		return "second text encoder"
	}
	return ns
}

// load reads and checks one module's tensors.
func load(src safetensors.Source, ns, mod string, p *part, m nn.Module) (*Factor, error) {
	if p.down == "" || p.up == "" {
		have := p.down + p.up + p.alpha + p.dora
		return nil, fmt.Errorf("lora: key %q has no matching %s tensor", have, map[bool]string{true: "up", false: "down"}[p.down != ""])
	}
	down, dshape, err := safetensors.Float32(src, p.down)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	up, ushape, err := safetensors.Float32(src, p.up)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	base := []int(m.Shape)
	out, in := base[0], base[1]
	if len(dshape) < 2 || dshape[0] <= 0 {
		return nil, fmt.Errorf("lora: key %q has shape %v; want (rank, %d, ...) for module %s %v", p.down, dshape, in, mod, base)
	}
	r := dshape[0]
	if m.Conv() {
		ok := len(dshape) == 4 && dshape[1] == in && (slices.Equal(dshape[2:], base[2:]) || (dshape[2] == 1 && dshape[3] == 1 && base[2] == 1 && base[3] == 1))
		if len(dshape) == 2 && base[2] == 1 && base[3] == 1 && dshape[1] == in {
			ok, dshape = true, []int{r, in, 1, 1}
		}
		if !ok {
			return nil, fmt.Errorf("lora: key %q has shape %v; module %s is a convolution %v and needs (rank, %d, %d, %d)", p.down, dshape, mod, base, in, base[2], base[3])
		}
	} else if len(dshape) != 2 && !(len(dshape) == 4 && dshape[2] == 1 && dshape[3] == 1) || dshape[1] != in {
		return nil, fmt.Errorf("lora: key %q has shape %v; module %s %v needs (rank, %d)", p.down, dshape, mod, base, in)
	} else {
		dshape = []int{r, in}
	}
	if len(ushape) < 2 || ushape[0] != out || ushape[1] != r || (len(ushape) == 4 && (ushape[2] != 1 || ushape[3] != 1)) || len(ushape) == 3 || len(ushape) > 4 {
		return nil, fmt.Errorf("lora: key %q has shape %v; module %s %v with rank %d needs (%d, %d)", p.up, ushape, mod, base, r, out, r)
	}
	// copies: the source (a memory map) may be closed after parsing
	f := &Factor{Namespace: ns, Module: mod, Down: slices.Clone(down), Up: slices.Clone(up), DownShape: dshape, Out: out, Rank: r, Scale: 1, Base: slices.Clone(base)}
	if p.alpha != "" {
		a, _, err := safetensors.Float32(src, p.alpha)
		if err != nil {
			return nil, fmt.Errorf("lora: %w", err)
		}
		if len(a) != 1 {
			return nil, fmt.Errorf("lora: key %q holds %d values; want one", p.alpha, len(a))
		}
		f.Scale = a[0] / float32(r)
	}
	if p.dora != "" {
		mag, mshape, err := safetensors.Float32(src, p.dora)
		if err != nil {
			return nil, fmt.Errorf("lora: %w", err)
		}
		if len(mag) != out || (len(mshape) > 1 && mshape[0] != out) {
			return nil, fmt.Errorf("lora: key %q has shape %v; DoRA's magnitude for module %s %v needs %d values, one per output feature (LyCORIS wd_on_out=False files are not supported)", p.dora, mshape, mod, base, out)
		}
		if m.Conv() {
			return nil, fmt.Errorf("lora: key %q: DoRA on convolutions is not supported; only linear layers", p.dora)
		}
		if ns != UNet {
			return nil, fmt.Errorf("lora: key %q: DoRA on the text encoder is not supported; only the denoiser's layers", p.dora)
		}
		f.Magnitude = slices.Clone(mag)
	}
	return f, nil
}
