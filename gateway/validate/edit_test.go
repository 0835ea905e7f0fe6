package validate

import (
	"math"
	"testing"

	"github.com/kiln-project/kiln/server/jobs"
)

func floatp(v float64) *float64 { return &v }
func uintp(v uint64) *uint64    { return &v }

// TestPlanEdit checks the editing and variation fields: defaults, copies
// into the job's parameters, and 400s naming the field.
func TestPlanEdit(t *testing.T) {
	v, _, _ := setup(t)
	pr := principal(1, 60)
	p, err := v.Plan(pr, &JobRequest{Prompt: "x", Mask: "data", InpaintFill: "latent_noise"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if p.MaskBlur != DefaultMaskBlur || p.InpaintFill != "latent_noise" || p.Outpaint != nil {
		t.Fatalf("mask params %+v", p)
	}
	p, err = v.Plan(pr, &JobRequest{Prompt: "x", Mask: "data", InpaintFullRes: true}, true)
	if err != nil || !p.InpaintFullRes || p.InpaintFullResPadding != DefaultFullResPadding {
		t.Fatalf("full res: %+v, %v", p, err)
	}
	p, err = v.Plan(pr, &JobRequest{Prompt: "x", Outpaint: &jobs.Outpaint{Left: 64}, MaskBlur: intp(0)}, true)
	if err != nil {
		t.Fatal(err)
	}
	if p.MaskBlur != 0 || p.Outpaint == nil || p.Outpaint.Left != 64 {
		t.Fatalf("outpaint params %+v", p)
	}
	p, err = v.Plan(pr, &JobRequest{Prompt: "x", Subseed: uintp(9), SubseedStrength: floatp(0.25)}, false)
	if err != nil {
		t.Fatal(err)
	}
	if p.Subseed != 9 || p.SubseedStrength != 0.25 {
		t.Fatalf("variation params %+v", p)
	}
	p, err = v.Plan(pr, &JobRequest{Prompt: "x", SubseedStrength: floatp(0.5)}, false)
	if err != nil || p.SubseedStrength != 0.5 {
		t.Fatalf("random subseed: %+v, %v", p, err)
	}
	cases := map[string]struct {
		r       JobRequest
		hasInit bool
		field   string
	}{
		"mask without init":     {JobRequest{Mask: "m"}, false, "mask"},
		"outpaint without init": {JobRequest{Outpaint: &jobs.Outpaint{Top: 8}}, false, "outpaint"},
		"mask and outpaint":     {JobRequest{Mask: "m", Outpaint: &jobs.Outpaint{Top: 8}}, true, "outpaint"},
		"blur without mask":     {JobRequest{MaskBlur: intp(3)}, true, "mask_blur"},
		"blur too large":        {JobRequest{Mask: "m", MaskBlur: intp(1000)}, true, "mask_blur"},
		"unknown fill":          {JobRequest{Mask: "m", InpaintFill: "blue"}, true, "inpaint_fill"},
		"negative outpaint":     {JobRequest{Outpaint: &jobs.Outpaint{Top: -8}}, true, "outpaint"},
		"empty outpaint":        {JobRequest{Outpaint: &jobs.Outpaint{}}, true, "outpaint"},
		"full res without mask": {JobRequest{InpaintFullRes: true}, true, "inpaint_full_res"},
		"padding alone":         {JobRequest{Mask: "m", InpaintFullResPadding: intp(8)}, true, "inpaint_full_res_padding"},
		"padding too large":     {JobRequest{Mask: "m", InpaintFullRes: true, InpaintFullResPadding: intp(5000)}, true, "inpaint_full_res_padding"},
		"strength above one":    {JobRequest{SubseedStrength: floatp(1.5)}, false, "subseed_strength"},
		"strength nan":          {JobRequest{SubseedStrength: floatp(math.NaN())}, false, "subseed_strength"},
		"subseed too large":     {JobRequest{Subseed: uintp(MaxSeed + 1)}, false, "subseed"},
	}
	for name, c := range cases {
		c.r.Prompt = "x"
		_, err := v.Plan(pr, &c.r, c.hasInit)
		if err == nil || err.Field != c.field {
			t.Errorf("%s: error %v, want one on field %q", name, err, c.field)
		}
	}
}
