// Package modeltest builds full-size models with random weights for tests
// and benchmarks, without downloads: the configs of published architectures
// (SD 1.5, SD 2.1 UNets, the SD VAE) and Random, an in-memory
// safetensors.Source that generates each tensor on demand from a seed.
//
//	cfg, _ := unet.ParseConfig(modeltest.SD15UNetConfig())
//	infos, _ := unet.ExpectedTensors(cfg)
//	src, _ := modeltest.NewRandom(infos, 1, "F32")
//	m, _ := unet.New(be, cfg, src)
package modeltest

import (
	"embed"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/kiln-project/kiln/core/safetensors"
)

//go:embed configs/*.json
var configFiles embed.FS

func config(name string) []byte {
	b, err := configFiles.ReadFile("configs/" + name)
	if err != nil {
		panic("modeltest: embedded config " + name + " missing: " + err.Error())
	}
	return b
}

// SD15UNetConfig returns the unet/config.json of Stable Diffusion 1.5
// (860 M parameters: widths 320/640/1280/1280, 2 layers per block, 8 heads,
// context width 768).
func SD15UNetConfig() []byte { return config("sd15_unet.json") }

// SD21UNetConfig returns the unet/config.json of Stable Diffusion 2.1
// (per-block heads 5/10/20/20, linear projections, context width 1024).
func SD21UNetConfig() []byte { return config("sd21_unet.json") }

// SDVAEConfig returns the vae/config.json of the Stable Diffusion VAE
// (widths 128/256/512/512, factor 8).
func SDVAEConfig() []byte { return config("sd_vae.json") }

// SDXLUNetConfig returns the published SDXL 1.0 base UNet config.json
// (text_time conditioning with 6 time ids, 2048-wide context).
func SDXLUNetConfig() []byte { return config("sdxl_unet.json") }

// SDXLRefinerUNetConfig returns the published SDXL 1.0 refiner UNet
// config.json (aesthetic-score conditioning with 5 time ids).
func SDXLRefinerUNetConfig() []byte { return config("sdxl_refiner_unet.json") }

// SDXLVAEConfig returns the published SDXL VAE config.json (scaling factor
// 0.13025, force_upcast).
func SDXLVAEConfig() []byte { return config("sdxl_vae.json") }

// SDXLTextEncoderConfig returns the published config of SDXL's first text
// encoder (CLIP ViT-L).
func SDXLTextEncoderConfig() []byte { return config("sdxl_text_encoder.json") }

// SDXLTextEncoder2Config returns the published config of SDXL's second text
// encoder (OpenCLIP ViT-bigG with its projection).
func SDXLTextEncoder2Config() []byte { return config("sdxl_text_encoder_2.json") }

// Random is a safetensors.Source of random tensors with given names and
// shapes. Each call to Bytes generates the tensor afresh (deterministically
// from the seed and the name) and hands over the new buffer, so the source
// itself holds no data: a model loaded from it holds one copy.
//
// Weights of rank ≥ 2 are uniform in ±1/√fan_in (PyTorch's default
// initialisation), 1-D tensors named "*.weight" (norm scales) are
// 1 ± 0.1, and other 1-D tensors (biases) are uniform in ±0.05.
type Random struct {
	infos map[string]safetensors.TensorInfo
	names []string
	seed  uint64
}

// NewRandom returns a Random source of the named tensors, stored with
// dtype "F32", "F16" or "BF16" (the DType of infos is ignored).
func NewRandom(infos []safetensors.TensorInfo, seed uint64, dtype string) (*Random, error) {
	size := safetensors.DTypeSize(dtype)
	if dtype != "F32" && dtype != "F16" && dtype != "BF16" {
		return nil, fmt.Errorf("modeltest: dtype %q is not F32, F16 or BF16", dtype)
	}
	r := &Random{infos: make(map[string]safetensors.TensorInfo, len(infos)), seed: seed}
	var off int64
	for _, in := range infos {
		if _, dup := r.infos[in.Name]; dup {
			return nil, fmt.Errorf("modeltest: tensor %q listed twice", in.Name)
		}
		n := int64(in.Numel()) * int64(size)
		r.infos[in.Name] = safetensors.TensorInfo{Name: in.Name, DType: dtype, Shape: slices.Clone(in.Shape), Begin: off, End: off + n}
		off += n
		r.names = append(r.names, in.Name)
	}
	sort.Strings(r.names)
	return r, nil
}

// Names returns the tensor names, sorted.
func (r *Random) Names() []string { return slices.Clone(r.names) }

// Info describes the named tensor.
func (r *Random) Info(name string) (safetensors.TensorInfo, bool) {
	in, ok := r.infos[name]
	in.Shape = slices.Clone(in.Shape)
	return in, ok
}

// Bytes generates the named tensor.
func (r *Random) Bytes(name string) ([]byte, error) {
	in, ok := r.infos[name]
	if !ok {
		return nil, fmt.Errorf("modeltest: no tensor %q", name)
	}
	n := in.Numel()
	lo, hi := r.bounds(in)
	size := safetensors.DTypeSize(in.DType)
	out := make([]byte, n*size)
	h := fnv.New64a()
	h.Write([]byte(name))
	key := h.Sum64() ^ r.seed
	const chunk = 1 << 18
	chunks := (n + chunk - 1) / chunk
	var wg sync.WaitGroup
	work := make(chan int, chunks)
	for c := range chunks {
		work <- c
	}
	close(work)
	for range min(chunks, runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				rng := rand.New(rand.NewPCG(key, uint64(c)))
				for i := c * chunk; i < min(n, (c+1)*chunk); i++ {
					v := float32(lo + (hi-lo)*rng.Float64())
					switch in.DType {
					case "F32":
						binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
					case "F16":
						binary.LittleEndian.PutUint16(out[2*i:], safetensors.Float32ToFloat16(v))
					default:
						binary.LittleEndian.PutUint16(out[2*i:], safetensors.Float32ToBFloat16(v))
					}
				}
			}
		}()
	}
	wg.Wait()
	return out, nil
}

// bounds returns the uniform range of a tensor's values.
func (r *Random) bounds(in safetensors.TensorInfo) (lo, hi float64) {
	switch {
	case len(in.Shape) >= 2:
		fanIn := max(1, in.Numel()/max(1, in.Shape[0]))
		b := 1 / math.Sqrt(float64(fanIn))
		return -b, b
	case strings.HasSuffix(in.Name, ".weight"):
		return 0.9, 1.1
	default:
		return -0.05, 0.05
	}
}
