package catalog

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kiln-project/kiln/core/checkpoint"
)

// native is the image size a model was trained at and its VAE factor.
type native struct {
	width, height, factor int
}

// diffusersNative reads the native size of a diffusers folder from its UNet
// and VAE configs: sample_size latents × the VAE's downsampling factor.
func diffusersNative(dir string) (native, error) {
	unet, err := os.ReadFile(filepath.Join(dir, "unet", "config.json"))
	if err != nil {
		return native{}, err
	}
	vae, err := os.ReadFile(filepath.Join(dir, "vae", "config.json"))
	if err != nil {
		return native{}, err
	}
	return nativeFromConfigs(unet, vae, nil)
}

// singleFileNative loads a single-file checkpoint's inferred configs.
// Original checkpoints do not record their training size: SD 2.x
// v-prediction checkpoints (OpenCLIP text encoder, cross-attention width
// 1024) are the 768-pixel models, all others 512.
func singleFileNative(path string) (native, error) {
	m, err := checkpoint.Load(path, checkpoint.Options{})
	if err != nil {
		return native{}, err
	}
	defer m.Close()
	return nativeFromConfigs(m.UNetConfig, m.VAEConfig, m.SchedulerConfig)
}

// nativeFromConfigs computes the native size from diffusers configs. A
// scheduler config, when given, marks a single-file checkpoint whose
// sample_size is inferred rather than recorded.
func nativeFromConfigs(unetJSON, vaeJSON, schedJSON []byte) (native, error) {
	var u struct {
		SampleSize        json.RawMessage `json:"sample_size"`
		CrossAttentionDim json.RawMessage `json:"cross_attention_dim"`
	}
	if err := json.Unmarshal(unetJSON, &u); err != nil {
		return native{}, fmt.Errorf("unet config: %w", err)
	}
	var v struct {
		BlockOutChannels []int `json:"block_out_channels"`
	}
	if err := json.Unmarshal(vaeJSON, &v); err != nil {
		return native{}, fmt.Errorf("vae config: %w", err)
	}
	if len(v.BlockOutChannels) < 1 || len(v.BlockOutChannels) > 8 {
		return native{}, fmt.Errorf("vae config: %d block_out_channels", len(v.BlockOutChannels))
	}
	factor := 1 << (len(v.BlockOutChannels) - 1)
	var side int
	var pair []int
	var h, w int
	switch {
	case json.Unmarshal(u.SampleSize, &side) == nil && side > 0:
		h, w = side, side
	case json.Unmarshal(u.SampleSize, &pair) == nil && len(pair) == 2 && pair[0] > 0 && pair[1] > 0:
		h, w = pair[0], pair[1] // diffusers' (height, width)
	default:
		return native{}, fmt.Errorf("unet config: sample_size %s is not a size", u.SampleSize)
	}
	if schedJSON != nil {
		var s struct {
			Prediction string `json:"prediction_type"`
		}
		var cross int
		_ = json.Unmarshal(schedJSON, &s)
		_ = json.Unmarshal(u.CrossAttentionDim, &cross)
		if s.Prediction == "v_prediction" && cross == 1024 && h == 64 && w == 64 {
			h, w = 96, 96
		}
	}
	if h*factor > 1<<14 || w*factor > 1<<14 {
		return native{}, fmt.Errorf("unet config: sample_size %s is implausibly large", u.SampleSize)
	}
	return native{width: w * factor, height: h * factor, factor: factor}, nil
}
