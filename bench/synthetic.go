// Package bench is Kiln's benchmark suite (`kiln bench`): model load time,
// text encoder, UNet step with classifier-free guidance, VAE decode and
// end-to-end latency and throughput for real model folders and for
// synthetic random-weight architectures, on whatever backend the device
// selection gives.
package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kiln-project/kiln/core/checkpoint"
	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/model/modeltest"
	"github.com/kiln-project/kiln/core/model/qwenimage"
	"github.com/kiln-project/kiln/core/model/unet"
	"github.com/kiln-project/kiln/core/model/vae"
	"github.com/kiln-project/kiln/core/safetensors"
)

// SyntheticPrefix marks a model argument that names a random-weight
// architecture instead of a path.
const SyntheticPrefix = "synthetic:"

// sd15TextEncoderConfig is the CLIP ViT-L/14 text tower of SD 1.x.
const sd15TextEncoderConfig = `{
  "architectures": ["CLIPTextModel"],
  "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
  "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05,
  "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407, "projection_dim": 768,
  "model_type": "clip_text_model"
}`

// eulerSchedulerConfig is SD 1.x's scheduler as the diffusers Euler pipeline uses it.
const eulerSchedulerConfig = `{
  "_class_name": "EulerDiscreteScheduler",
  "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
  "clip_sample": false, "interpolation_type": "linear", "num_train_timesteps": 1000,
  "prediction_type": "epsilon", "set_alpha_to_one": false, "steps_offset": 1,
  "timestep_spacing": "leading", "trained_betas": null, "use_karras_sigmas": false
}`

// SyntheticFamily returns the random-weight checkpoint of a synthetic
// architecture whose family is built outside core/checkpoint
// ("synthetic:qwen-image": Qwen-Image at a small width, see
// qwenimage.Synthetic), or nil for any other name.
func SyntheticFamily(name string, seed uint64) (family.Checkpoint, error) {
	if name != SyntheticPrefix+"qwen-image" {
		return nil, nil
	}
	c, err := qwenimage.Synthetic(seed)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Synthetic builds a random-weight model for name ("sd15", "sd21", "sdxl",
// "sdxl-refiner", optionally "@SIZE" for the image side): the published
// architecture's text encoders, UNet and VAE with fp16 weights generated on
// demand, an Euler scheduler, and a byte-level tokenizer written to a
// temporary folder. It returns the model, the image side to benchmark at,
// and a cleanup function.
func Synthetic(name string, seed uint64) (*checkpoint.Model, int, func(), error) {
	arch, sizeStr, _ := strings.Cut(name, "@")
	if arch == "sdxl" || arch == "sdxl-refiner" {
		return syntheticSDXL(arch == "sdxl-refiner", sizeStr, seed)
	}
	size := 512
	if sizeStr != "" {
		n, err := strconv.Atoi(sizeStr)
		if err != nil || n < 64 || n%64 != 0 {
			return nil, 0, nil, fmt.Errorf("bench: synthetic model %q: size must be a multiple of 64", name)
		}
		size = n
	}
	var unetCfg []byte
	switch arch {
	case "sd15":
		unetCfg = modeltest.SD15UNetConfig()
	case "sd21":
		unetCfg = modeltest.SD21UNetConfig()
		if sizeStr == "" {
			size = 768
		}
	default:
		return nil, 0, nil, fmt.Errorf("bench: unknown synthetic model %q (have sd15, sd21, sdxl, sdxl-refiner, each optionally @SIZE)", name)
	}
	teCfg := []byte(sd15TextEncoderConfig)
	if arch == "sd21" {
		teCfg = []byte(strings.NewReplacer(`"hidden_size": 768`, `"hidden_size": 1024`, `"intermediate_size": 3072`, `"intermediate_size": 4096`,
			`"num_hidden_layers": 12`, `"num_hidden_layers": 23`, `"num_attention_heads": 12`, `"num_attention_heads": 16`,
			`"quick_gelu"`, `"gelu"`, `"projection_dim": 768`, `"projection_dim": 1024`).Replace(sd15TextEncoderConfig))
	}
	usrc, vsrc, err := randomUNetVAE(unetCfg, modeltest.SDVAEConfig(), seed)
	if err != nil {
		return nil, 0, nil, err
	}
	var te struct {
		Hidden       int `json:"hidden_size"`
		Intermediate int `json:"intermediate_size"`
		Layers       int `json:"num_hidden_layers"`
	}
	if err := json.Unmarshal(teCfg, &te); err != nil {
		return nil, 0, nil, err
	}
	tsrc, err := modeltest.NewRandom(clipTensors(te.Hidden, te.Intermediate, te.Layers), seed+2, "F16")
	if err != nil {
		return nil, 0, nil, err
	}
	dir, cleanup, err := tempByteTokenizer()
	if err != nil {
		return nil, 0, nil, err
	}
	m := &checkpoint.Model{
		Path: SyntheticPrefix + name, Layout: checkpoint.LayoutDiffusers, TokenizerDir: dir,
		TextEncoderConfig: teCfg, UNetConfig: unetCfg, VAEConfig: modeltest.SDVAEConfig(),
		SchedulerConfig: []byte(eulerSchedulerConfig),
		TextEncoder:     tsrc, UNet: usrc, VAE: vsrc,
	}
	return m, size, cleanup, nil
}

// syntheticSDXL is Synthetic for SDXL 1.0's base or refiner (1024 pixels
// unless sizeStr says otherwise).
func syntheticSDXL(refiner bool, sizeStr string, seed uint64) (*checkpoint.Model, int, func(), error) {
	size := 1024
	if sizeStr != "" {
		n, err := strconv.Atoi(sizeStr)
		if err != nil || n < 64 || n%64 != 0 {
			return nil, 0, nil, fmt.Errorf("bench: synthetic sdxl@%s: size must be a multiple of 64", sizeStr)
		}
		size = n
	}
	unetCfg := modeltest.SDXLUNetConfig()
	if refiner {
		unetCfg = modeltest.SDXLRefinerUNetConfig()
	}
	usrc, vsrc, err := randomUNetVAE(unetCfg, modeltest.SDXLVAEConfig(), seed)
	if err != nil {
		return nil, 0, nil, err
	}
	m := &checkpoint.Model{
		Path: SyntheticPrefix + "sdxl", Layout: checkpoint.LayoutDiffusers, Family: checkpoint.FamilySDXL,
		UNetConfig: unetCfg, VAEConfig: modeltest.SDXLVAEConfig(), SchedulerConfig: checkpoint.SDXLSchedulerConfig("epsilon"),
		TextEncoder2Config: modeltest.SDXLTextEncoder2Config(), ForceZerosForEmptyPrompt: !refiner, RequiresAestheticsScore: refiner,
		UNet: usrc, VAE: vsrc,
	}
	// OpenCLIP ViT-bigG with its projection (1280 wide, 32 layers).
	te2 := append(clipTensors(1280, 5120, 32), safetensors.TensorInfo{Name: "text_projection.weight", DType: "F16", Shape: []int{1280, 1280}})
	if m.TextEncoder2, err = modeltest.NewRandom(te2, seed+2, "F16"); err != nil {
		return nil, 0, nil, err
	}
	if !refiner { // CLIP ViT-L
		m.TextEncoderConfig = modeltest.SDXLTextEncoderConfig()
		if m.TextEncoder, err = modeltest.NewRandom(clipTensors(768, 3072, 12), seed+3, "F16"); err != nil {
			return nil, 0, nil, err
		}
	}
	dir, cleanup, err := tempByteTokenizer()
	if err != nil {
		return nil, 0, nil, err
	}
	m.Tokenizer2Dir, m.Tokenizer2Pad = dir, "!"
	if !refiner {
		m.TokenizerDir = dir
	}
	return m, size, cleanup, nil
}

// randomUNetVAE makes random fp16 weights (seed, seed+1) for a UNet and a
// VAE with the given diffusers configs.
func randomUNetVAE(unetCfg, vaeCfg []byte, seed uint64) (u, v safetensors.Source, err error) {
	ucfg, err := unet.ParseConfig(unetCfg)
	if err != nil {
		return nil, nil, err
	}
	uinfos, err := unet.ExpectedTensors(ucfg)
	if err != nil {
		return nil, nil, err
	}
	vcfg, err := vae.ParseConfig(vaeCfg)
	if err != nil {
		return nil, nil, err
	}
	vinfos, err := vae.ExpectedTensors(vcfg)
	if err != nil {
		return nil, nil, err
	}
	if u, err = modeltest.NewRandom(uinfos, seed, "F16"); err != nil {
		return nil, nil, err
	}
	if v, err = modeltest.NewRandom(vinfos, seed+1, "F16"); err != nil {
		return nil, nil, err
	}
	return u, v, nil
}

// tempByteTokenizer writes the synthetic models' byte-level tokenizer to
// a temporary folder; cleanup removes it.
func tempByteTokenizer() (dir string, cleanup func(), err error) {
	dir, err = os.MkdirTemp("", "kiln-synthetic-tokenizer-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	if err := writeByteTokenizer(dir); err != nil {
		cleanup()
		return "", nil, err
	}
	return dir, cleanup, nil
}

// clipTensors lists the weights of a CLIP text transformer.
func clipTensors(d, f, layers int) []safetensors.TensorInfo {
	t := func(name string, shape ...int) safetensors.TensorInfo {
		return safetensors.TensorInfo{Name: name, DType: "F16", Shape: shape}
	}
	out := []safetensors.TensorInfo{
		t("embeddings.token_embedding.weight", 49408, d),
		t("embeddings.position_embedding.weight", 77, d),
		t("final_layer_norm.weight", d), t("final_layer_norm.bias", d),
	}
	for i := 0; i < layers; i++ {
		p := "encoder.layers." + strconv.Itoa(i) + "."
		out = append(out,
			t(p+"layer_norm1.weight", d), t(p+"layer_norm1.bias", d),
			t(p+"layer_norm2.weight", d), t(p+"layer_norm2.bias", d),
			t(p+"mlp.fc1.weight", f, d), t(p+"mlp.fc1.bias", f),
			t(p+"mlp.fc2.weight", d, f), t(p+"mlp.fc2.bias", d),
		)
		for _, proj := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
			out = append(out, t(p+"self_attn."+proj+".weight", d, d), t(p+"self_attn."+proj+".bias", d))
		}
	}
	return out
}

// byteLevel returns GPT-2's printable stand-in for each byte, the alphabet
// CLIP's byte-level BPE works in.
func byteLevel() [256]rune {
	var out [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff) {
			out[b] = rune(b)
		} else {
			out[b] = rune(256 + n)
			n++
		}
	}
	return out
}

// writeByteTokenizer writes a CLIP-style tokenizer with one token per byte
// (and per word-final byte) and no merges: every prompt tokenizes, one
// token per character, which is all a random-weight model needs.
func writeByteTokenizer(dir string) error {
	vocab := map[string]int{"<|startoftext|>": 49406, "<|endoftext|>": 49407}
	for b, r := range byteLevel() {
		vocab[string(r)] = b
		vocab[string(r)+"</w>"] = 256 + b
	}
	js, err := json.Marshal(vocab)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"vocab.json": js,
		"merges.txt": []byte("#version: 0.2\n"),
		"tokenizer_config.json": []byte(`{"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
  "unk_token": "<|endoftext|>", "model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}`),
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			return fmt.Errorf("bench: tokenizer: %w", err)
		}
	}
	return nil
}
