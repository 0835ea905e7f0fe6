package qwenimage

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/model/qwenimage/qitest"
	"github.com/kiln-project/kiln/core/sample"
)

// TestSchedulesMatchDiffusers: FlowMatchEulerDiscreteScheduler sigmas and
// timesteps with calculate_shift, dynamic (exponential) shifting and
// shift_terminal, for several step counts and image sizes.
func TestSchedulesMatchDiffusers(t *testing.T) {
	m := meta(t)
	p, err := Load(cpu.New(), filepath.Join(qitest.Dir(), "pipe"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if len(m.Schedules) == 0 {
		t.Fatal("no schedules in the fixtures")
	}
	for _, s := range m.Schedules {
		if mu := p.Scheduler.Mu(s.Seq); math.Abs(mu-s.Mu) > 1e-12 {
			t.Errorf("mu(%d) = %v, want %v", s.Seq, mu, s.Mu)
		}
		fm, err := sample.NewFlowMatchEuler(p.Scheduler, s.Steps, s.Seq)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range s.Sigmas {
			if got := fm.Sigmas()[i]; math.Abs(got-want) > 1e-6 {
				t.Errorf("steps %d seq %d: sigma[%d] = %v, want %v", s.Steps, s.Seq, i, got, want)
			}
		}
		for i, want := range s.Timesteps {
			if got := fm.Timesteps()[i]; math.Abs(got-want) > 1e-3 {
				t.Errorf("steps %d seq %d: timestep[%d] = %v, want %v", s.Steps, s.Seq, i, got, want)
			}
		}
	}
}

// TestPipelineMatchesDiffusers: QwenImagePipeline latents (4 steps) with
// and without true CFG (scale 4, norm rescale) and the decoded image, and
// QwenImageImg2ImgPipeline latents (strength 0.6, 5 steps, CFG 2.5), from
// the fixture folder and the pipeline's noise, within 1e-3.
func TestPipelineMatchesDiffusers(t *testing.T) {
	m := meta(t)
	refs := qitest.Refs(t)
	p, err := Load(cpu.New(), filepath.Join(qitest.Dir(), "pipe"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	noise, _ := qitest.Tensor(t, refs, "pipe.noise")
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		cfg  float64
		neg  bool
	}{{"t2i", 1, false}, {"t2i_cfg", 4, true}} {
		t.Run(tc.name, func(t *testing.T) {
			r := Request{Prompt: m.Prompts[0], Negative: m.Negative, HasNegative: tc.neg, CFG: tc.cfg,
				Width: m.Pipe.Width, Height: m.Pipe.Height, Steps: m.Pipe.Steps, Noise: noise}
			lat, err := p.Generate(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := qitest.Tensor(t, refs, "pipe."+tc.name+".latents")
			qitest.Check(t, "latents", lat, want, 1e-3)
			px, err := p.Decode(ctx, lat, r.Width, r.Height)
			if err != nil {
				t.Fatal(err)
			}
			img, _ := qitest.Tensor(t, refs, "pipe."+tc.name+".image") // (1, H, W, 3) in [0, 1]
			hw := r.Width * r.Height
			got := make([]float32, len(img))
			for c := range 3 {
				for i := range hw {
					got[i*3+c] = min(max(px[c*hw+i]/2+0.5, 0), 1)
				}
			}
			qitest.Check(t, "image", got, img, 1e-3)
		})
	}
	t.Run("img2img", func(t *testing.T) {
		u8, _ := qitest.Tensor(t, refs, "i2i.image_u8") // (H, W, 3)
		H, W := m.Pipe.Height, m.Pipe.Width
		img := make([]float32, 3*H*W)
		for c := range 3 {
			for i := range H * W {
				img[c*H*W+i] = 2*(u8[i*3+c]/255) - 1
			}
		}
		n, _ := qitest.Tensor(t, refs, "i2i.noise")
		pn, _ := qitest.Tensor(t, refs, "i2i.posterior_noise")
		r := Request{Prompt: m.I2I.Prompt, Negative: m.I2I.Negative, HasNegative: true, CFG: m.I2I.CFG, Width: W,
			Height: H, Steps: m.I2I.Steps, Noise: n, Image: img, PosteriorNoise: pn, Strength: m.I2I.Strength}
		lat, err := p.Generate(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := qitest.Tensor(t, refs, "i2i.latents")
		qitest.Check(t, "img2img latents", lat, want, 1e-3)
	})
}

func TestAspectSizesFitTheModel(t *testing.T) {
	if s := AspectSizes["1:1"]; s != [2]int{NativeSize, NativeSize} {
		t.Fatalf("1:1 is %v", s)
	}
	for r, s := range AspectSizes {
		if s[0]%SizeMultiple != 0 || s[1]%SizeMultiple != 0 {
			t.Errorf("%s: %v not a multiple of %d", r, s, SizeMultiple)
		}
	}
}
