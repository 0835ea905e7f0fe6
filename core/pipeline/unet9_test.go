package pipeline

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"image"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/rng"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// inpaintModel writes a copy of the fixture model whose UNet takes 9
// input channels (an inpainting UNet's layout): conv_in keeps the
// fixture's weights for the latents, the mask and masked-image channels
// get extra(i) for their i-th weight.
func inpaintModel(t *testing.T, extra func(i int) float32) string {
	t.Helper()
	src := fixtures.Require(t, "sd15-tiny/model")
	dir := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if en.Name() == "unet" {
			continue
		}
		abs, _ := filepath.Abs(filepath.Join(src, en.Name()))
		if err := os.Symlink(abs, filepath.Join(dir, en.Name())); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(dir, "unet"), 0o755)
	var cfg map[string]any
	data, err := os.ReadFile(filepath.Join(src, "unet", "config.json"))
	if err != nil || json.Unmarshal(data, &cfg) != nil {
		t.Fatalf("unet config: %v", err)
	}
	cfg["in_channels"] = 9
	data, _ = json.Marshal(cfg)
	os.WriteFile(filepath.Join(dir, "unet", "config.json"), data, 0o644)
	f, err := safetensors.Open(filepath.Join(src, "unet", "diffusion_pytorch_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []safetensors.WriteTensor
	for _, name := range f.Names() {
		if name != "conv_in.weight" {
			wt, err := safetensors.FromSource(f, name, name)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, wt)
			continue
		}
		info, _ := f.Info(name)
		b, _ := f.Bytes(name)
		o, in := info.Shape[0], info.Shape[1]
		k := info.Shape[2] * info.Shape[3]
		w := make([]float32, o*9*k)
		i := 0
		for oc := 0; oc < o; oc++ {
			for ic := 0; ic < 9; ic++ {
				for j := 0; j < k; j++ {
					if ic < in {
						w[(oc*9+ic)*k+j] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*((oc*in+ic)*k+j):]))
					} else {
						w[(oc*9+ic)*k+j] = extra(i)
						i++
					}
				}
			}
		}
		out = append(out, safetensors.F32Tensor(name, []int{o, 9, info.Shape[2], info.Shape[3]}, w))
	}
	if err := safetensors.WriteFile(filepath.Join(dir, "unet", "diffusion_pytorch_model.safetensors"), out, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestInpaintingUNet checks the 9-channel path: with the extra channels'
// weights zero it computes exactly what the 4-channel model computes for
// a mask repainting everything (no blending, same draws), with real extra
// weights the mask and masked image change the result, pixels outside
// the mask still come back unchanged, and a request without a mask is
// refused.
func TestInpaintingUNet(t *testing.T) {
	e := loadEnv(t)
	load := func(dir string) *Pipeline {
		p, err := Load(context.Background(), cpu.New(), dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		p.SetSchedulerConfig(e.pipe.SchedulerConfig())
		if p.Model().Defaults().DenoiserChannels != 9 {
			t.Fatalf("denoiser channels %d, want 9", p.Model().Defaults().DenoiserChannels)
		}
		return p
	}
	zero := load(inpaintModel(t, func(int) float32 { return 0 }))
	noise := rng.NewCPU(77).Randn(1 << 16)
	trained := load(inpaintModel(t, func(i int) float32 { return 0.05 * noise[i%len(noise)] }))

	hole := image.Rect(16, 16, 48, 40)
	req := editRequest(21)
	req.Sampler, req.Steps = "euler_a", 4
	req.InitImage, req.Strength = testImage(64, 64), 0.75
	req.SkipDecode = true
	req.Edit = Edit{Mask: centreMask(64, 64, hole)}
	z := generate(t, zero, req)
	whole := req
	whole.Edit = Edit{Mask: centreMask(64, 64, image.Rect(0, 0, 64, 64))}
	four := generate(t, e.pipe, whole)
	if err := fixtures.RelErr(z.Latents, four.Latents); err > 1e-6 {
		t.Fatalf("zero extra weights: rel err %g against the 4-channel model", err)
	}
	r := generate(t, trained, req)
	if fixtures.RelErr(r.Latents, z.Latents) < 1e-4 {
		t.Fatal("the mask and masked-image channels changed nothing")
	}
	dec := req
	dec.SkipDecode = false
	out := generate(t, trained, dec).Images[0]
	init := testImage(64, 64)
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			if !(image.Point{x, y}.In(hole)) && out.RGBAAt(x, y) != init.RGBAAt(x, y) {
				t.Fatalf("pixel (%d,%d) outside the mask changed", x, y)
			}
		}
	}
	if _, err := trained.Generate(context.Background(), editRequest(1), nil); err == nil {
		t.Fatal("txt2img on an inpainting model was accepted")
	}
}
