package checkpoint

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tokenizer"
)

// sdxlTestdata is the committed tiny SDXL fixture folder (made by diffusers;
// its single files were checked against diffusers' own converters).
const sdxlTestdata = "../model/sdxl/testdata"

func loadSDXL(t *testing.T, path string, opts Options) *Model {
	t.Helper()
	m, err := Load(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// folderConfigs returns the diffusers folder's configs as load options for
// the matching single file (the tiny models' head counts cannot be
// inferred from shapes).
func folderConfigs(t *testing.T, folder *Model) Options {
	t.Helper()
	return Options{UNetConfig: folder.UNetConfig, VAEConfig: folder.VAEConfig,
		TextEncoderConfig: folder.TextEncoderConfig, TextEncoder2Config: folder.TextEncoder2Config}
}

func TestSDXLDiffusersFolders(t *testing.T) {
	base := loadSDXL(t, filepath.Join(sdxlTestdata, "base"), Options{})
	if base.Family != FamilySDXL || base.TextEncoder == nil || base.TextEncoder2 == nil ||
		!base.ForceZerosForEmptyPrompt || base.RequiresAestheticsScore || base.Tokenizer2Pad != "" {
		t.Errorf("base: family %q, encoders %v %v, force zeros %v, aesthetics %v, pad %q", base.Family,
			base.TextEncoder != nil, base.TextEncoder2 != nil, base.ForceZerosForEmptyPrompt, base.RequiresAestheticsScore, base.Tokenizer2Pad)
	}
	if _, ok := base.TextEncoder2.Info("text_projection.weight"); !ok {
		t.Error("base: text_encoder_2 has no text_projection.weight")
	}
	ref := loadSDXL(t, filepath.Join(sdxlTestdata, "refiner"), Options{})
	if ref.Family != FamilySDXL || ref.TextEncoder != nil || ref.TokenizerDir != "" || ref.TextEncoder2 == nil ||
		ref.ForceZerosForEmptyPrompt || !ref.RequiresAestheticsScore {
		t.Errorf("refiner: family %q, encoders %v %v, force zeros %v, aesthetics %v", ref.Family,
			ref.TextEncoder != nil, ref.TextEncoder2 != nil, ref.ForceZerosForEmptyPrompt, ref.RequiresAestheticsScore)
	}
}

// TestSDXLSingleFiles: the SGM single files present exactly the diffusers
// folders' tensors under the same names (text_projection transposed back),
// with the family's settings and SDXL's scheduler.
func TestSDXLSingleFiles(t *testing.T) {
	for _, name := range []string{"base", "refiner"} {
		t.Run(name, func(t *testing.T) {
			folder := loadSDXL(t, filepath.Join(sdxlTestdata, name), Options{})
			opts := folderConfigs(t, folder)
			opts.TokenizerDir = filepath.Join(sdxlTestdata, "base", "tokenizer")
			m := loadSDXL(t, filepath.Join(sdxlTestdata, name+".safetensors"), opts)
			if m.Family != FamilySDXL || m.Layout != LayoutSingleFile {
				t.Fatalf("family %q layout %q", m.Family, m.Layout)
			}
			sameTensors(t, "unet", m.UNet, folder.UNet)
			sameTensors(t, "vae", m.VAE, folder.VAE)
			sameTensors(t, "text_encoder_2", m.TextEncoder2, folder.TextEncoder2)
			if name == "base" {
				sameTensors(t, "text_encoder", m.TextEncoder, folder.TextEncoder)
			} else if m.TextEncoder != nil || m.TokenizerDir != "" {
				t.Error("refiner has a first text encoder or tokenizer")
			}
			if m.ForceZerosForEmptyPrompt != folder.ForceZerosForEmptyPrompt || m.RequiresAestheticsScore != folder.RequiresAestheticsScore {
				t.Errorf("force zeros %v aesthetics %v, the folder says %v %v", m.ForceZerosForEmptyPrompt, m.RequiresAestheticsScore,
					folder.ForceZerosForEmptyPrompt, folder.RequiresAestheticsScore)
			}
			if m.Tokenizer2Dir != opts.TokenizerDir || m.Tokenizer2Pad != "!" {
				t.Errorf("tokenizer 2: %q padding %q; want the first tokenizer's folder padding with !", m.Tokenizer2Dir, m.Tokenizer2Pad)
			}
			var sched map[string]any
			if err := json.Unmarshal(m.SchedulerConfig, &sched); err != nil || sched["timestep_spacing"] != "leading" {
				t.Errorf("scheduler %s: want leading spacing", m.SchedulerConfig)
			}
			if len(m.Ignored) != 1 || !strings.HasSuffix(m.Ignored[0], "logit_scale") {
				t.Errorf("ignored %v, want only OpenCLIP's logit_scale", m.Ignored)
			}
		})
	}
}

// TestSDXLInferredConfigs infers configs from SDXL-shaped tensors (64-channel
// heads, as real SDXL models have) and gets the layout back.
func TestSDXLInferredConfigs(t *testing.T) {
	unetL := UNetLayout{InChannels: 4, OutChannels: 4, BlockOut: []int{64, 128, 128}, LayersPerBlock: 2,
		DownAttention: []bool{false, true, true}, UpAttention: []bool{true, true, false},
		DownDepth: []int{3, 1, 3}, UpDepth: []int{3, 1, 3}, MidDepth: 3, CrossAttentionDim: 96,
		UseLinearProjection: true, AddEmbedInputDim: 40 + 6*sdxlAddTimeEmbedDim}
	js, err := inferSDXLUNetConfig(zeros(t, unetL.ExpectedTensors()))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseUNetLayout(js)
	if err != nil {
		t.Fatal(err)
	}
	want := unetL
	want.AttentionHeads = []int{1, 2, 2}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("inferred layout\n%+v\nwant\n%+v", got, want)
	}
	var cfg map[string]any
	_ = json.Unmarshal(js, &cfg)
	if cfg["addition_embed_type"] != "text_time" || cfg["addition_time_embed_dim"] != float64(256) {
		t.Errorf("inferred %s", js)
	}

	textL := TextLayout{Hidden: 128, Intermediate: 200, Layers: 3, Heads: 2, Vocab: 50, Positions: 77, Projection: 96}
	js, err = inferSDXLText2Config(zeros(t, textL.ExpectedTensors()))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ParseTextLayout(js); err != nil || !reflect.DeepEqual(got, textL) {
		t.Errorf("inferred text layout %+v, %v; want %+v", got, err, textL)
	}

	// The tiny fixture's heads are not 64 wide: inference says so and asks
	// for the config.
	_, err = Load(filepath.Join(sdxlTestdata, "base.safetensors"), Options{TokenizerDir: filepath.Join(sdxlTestdata, "base", "tokenizer")})
	if err == nil || !strings.Contains(err.Error(), "Options.UNetConfig") {
		t.Errorf("tiny SDXL without configs: %v", err)
	}
}

func zeros(t *testing.T, specs []TensorSpec) safetensors.Source {
	t.Helper()
	var ts []safetensors.WriteTensor
	for _, s := range specs {
		n := 1
		for _, d := range s.Shape {
			n *= d
		}
		ts = append(ts, safetensors.WriteTensor{Name: s.Name, DType: "F16", Shape: s.Shape, Data: make([]byte, 2*n)})
	}
	m, err := safetensors.NewMemory(ts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSDXLBadSingleFiles: what is missing is named.
func TestSDXLBadSingleFiles(t *testing.T) {
	folder := loadSDXL(t, filepath.Join(sdxlTestdata, "base"), Options{})
	opts := folderConfigs(t, folder)
	opts.TokenizerDir = filepath.Join(sdxlTestdata, "base", "tokenizer")
	p := filepath.Join(sdxlTestdata, "base.safetensors")
	drop := func(prefix string) func(safetensors.WriteTensor) *safetensors.WriteTensor {
		return func(wt safetensors.WriteTensor) *safetensors.WriteTensor {
			if strings.HasPrefix(wt.Name, prefix) {
				return nil
			}
			return &wt
		}
	}
	rename := func(from, to string) func(safetensors.WriteTensor) *safetensors.WriteTensor {
		return func(wt safetensors.WriteTensor) *safetensors.WriteTensor {
			if rest, ok := strings.CutPrefix(wt.Name, from); ok {
				wt.Name = to + rest
			}
			return &wt
		}
	}
	for _, tc := range []struct {
		name string
		edit func(safetensors.WriteTensor) *safetensors.WriteTensor
		want string
	}{
		{"no second encoder", drop(PrefixSDXLOpenCLIP), "conditioner.embedders.1.model.* tensors: the second text encoder (OpenCLIP ViT-bigG) is missing"},
		{"no encoders", drop(PrefixSDXLEmbedders), "an SDXL UNet (model.diffusion_model.label_emb.*) without its text encoders"},
		{"no projection", drop(PrefixSDXLOpenCLIP + "text_projection"), `missing tensor "conditioner.embedders.1.model.text_projection"`},
		{"no VAE", drop(PrefixVAE), "carries no VAE"},
		{"missing resblock weight", drop(PrefixSDXLOpenCLIP + "transformer.resblocks.3.mlp"), `missing tensor "conditioner.embedders.1.model.transformer.resblocks.3.mlp.c_fc.bias"`},
		{"missing add embedding", drop(PrefixUNet + "label_emb.0.2.bias"), `missing tensor "model.diffusion_model.label_emb.0.2.bias"`},
		{"Flux", rename(PrefixUNet+"input_blocks.1.", PrefixUNet+"double_blocks.1."), "Flux model, which is not supported"},
		{"both layouts", rename(PrefixSDXLCLIP, PrefixCLIP), "both SD 1.x/2.x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(rewrite(t, p, nil, tc.edit), opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	// The refiner needs some tokenizer.
	if _, err := Load(filepath.Join(sdxlTestdata, "refiner.safetensors"), Options{UNetConfig: folder.UNetConfig}); err == nil {
		t.Error("refiner single file without any tokenizer loaded")
	}
	if _, err := os.Stat(filepath.Join(sdxlTestdata, "tokenizer_2")); err == nil {
		t.Fatal("a tokenizer_2 folder beside the fixtures would change what this test checks")
	}
}

// TestSDXLSingleFilesAlone: without tokenizer folders an SDXL single file
// uses the embedded CLIP vocabulary for both tokenizers (the second
// padding with "!", as OpenCLIP does).
func TestSDXLSingleFilesAlone(t *testing.T) {
	for _, name := range []string{"base", "refiner"} {
		t.Run(name, func(t *testing.T) {
			folder := loadSDXL(t, filepath.Join(sdxlTestdata, name), Options{})
			m := loadSDXL(t, filepath.Join(sdxlTestdata, name+".safetensors"), folderConfigs(t, folder))
			if m.Tokenizer2Dir != "" || m.Tokenizer2Pad != "!" {
				t.Fatalf("tokenizer 2: folder %q, pad %q", m.Tokenizer2Dir, m.Tokenizer2Pad)
			}
			tok2, err := m.Tokenizer2()
			if err != nil || tok2.VocabSize() != tokenizer.CLIPVocabSize || tok2.Pad() != 0 {
				t.Fatalf("tokenizer 2: %v", err)
			}
			if name == "refiner" {
				return
			}
			if m.TokenizerDir != "" || m.EmbeddedPad != tokenizer.PadSD1 {
				t.Fatalf("tokenizer: folder %q, embedded pad %q", m.TokenizerDir, m.EmbeddedPad)
			}
			tok1, err := m.Tokenizer()
			if err != nil || tok1.Pad() != tokenizer.CLIPVocabSize-1 {
				t.Fatalf("tokenizer: %v", err)
			}
		})
	}
}
