package validate

import (
	"testing"
)

// TestPlanHires checks the hires field: defaults (latent upscaler, denoise
// 0.5), a size with one side from the aspect ratio, and 400s/limits naming
// the field — bad scale, both forms, unknown upscaler, a hires size above
// max_pixels, hires steps above max_steps, combination with init_image.
func TestPlanHires(t *testing.T) {
	v, _, _ := setup(t)
	pr := principal(1, 60)
	p, err := v.Plan(pr, &JobRequest{Prompt: "x", Width: intp(256), Height: intp(256), Hires: &HiresRequest{Scale: floatp(2)}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if h := p.Hires; h == nil || h.Scale != 2 || h.Upscaler != "latent" || h.Denoise != DefaultHiresDenoise || h.Steps != 0 || p.Width != 256 {
		t.Fatalf("hires params %+v (%+v)", p.Hires, p)
	}
	p, err = v.Plan(pr, &JobRequest{Prompt: "x", Width: intp(256), Height: intp(128),
		Hires: &HiresRequest{Width: intp(512), Upscaler: "lanczos", Steps: intp(12), Denoise: floatp(0.3)}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if h := p.Hires; h == nil || h.Width != 512 || h.Height != 0 || h.Upscaler != "lanczos" || h.Steps != 12 || h.Denoise != 0.3 {
		t.Fatalf("hires params %+v", p.Hires)
	}
	if p, err := v.Plan(pr, &JobRequest{Prompt: "x"}, false); err != nil || p.Hires != nil {
		t.Fatalf("no hires: %+v, %v", p.Hires, err)
	}
	cases := map[string]struct {
		r       JobRequest
		hasInit bool
		field   string
	}{
		"scale 1":         {JobRequest{Hires: &HiresRequest{Scale: floatp(1)}}, false, "hires.scale"},
		"scale 5":         {JobRequest{Hires: &HiresRequest{Scale: floatp(5)}}, false, "hires.scale"},
		"scale and size":  {JobRequest{Hires: &HiresRequest{Scale: floatp(2), Width: intp(1024)}}, false, "hires"},
		"no target":       {JobRequest{Hires: &HiresRequest{Steps: intp(4)}}, false, "hires.width"},
		"odd width":       {JobRequest{Hires: &HiresRequest{Width: intp(1001)}}, false, "hires.width"},
		"upscaler":        {JobRequest{Hires: &HiresRequest{Scale: floatp(2), Upscaler: "esrgan"}}, false, "hires.upscaler"},
		"too many pixels": {JobRequest{Width: intp(512), Height: intp(512), Hires: &HiresRequest{Scale: floatp(4)}}, false, "hires"},
		"steps":           {JobRequest{Hires: &HiresRequest{Scale: floatp(2), Steps: intp(500)}}, false, "hires.steps"},
		"denoise":         {JobRequest{Hires: &HiresRequest{Scale: floatp(2), Denoise: floatp(0)}}, false, "hires.denoise"},
		"with init":       {JobRequest{Hires: &HiresRequest{Scale: floatp(2)}}, true, "hires"},
	}
	for name, c := range cases {
		c.r.Prompt = "x"
		_, err := v.Plan(pr, &c.r, c.hasInit)
		if err == nil || err.Field != c.field {
			t.Errorf("%s: error %v, want one on field %q", name, err, c.field)
		}
	}
}
