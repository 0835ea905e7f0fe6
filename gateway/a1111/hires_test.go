package a1111

import (
	"bytes"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/gateway/validate"
)

// TestHiresFields checks the translation of txt2img's hires-fix fields
// (enable_hr, hr_scale, hr_resize_x/y, hr_upscaler, hr_second_pass_steps,
// denoising_strength) into the native hires field, and their refusals.
func TestHiresFields(t *testing.T) {
	h := New(stubBackend{}, 1<<16, time.Second)
	p := auth.Principal{Tenant: "t"}
	translate := func(body string, img2img bool) (*validate.JobRequest, *apierr.Error) {
		g, _, err := h.decodeRequest(httptest.NewRequest("POST", "/sdapi/v1/txt2img", bytes.NewReader([]byte(body))), img2img)
		if err != nil {
			return nil, err
		}
		return h.jobRequest(g, p, img2img)
	}
	jr, err := translate(`{"prompt":"x","enable_hr":true,"hr_scale":1.5,"hr_upscaler":"Lanczos","hr_second_pass_steps":12,"denoising_strength":0.4}`, false)
	if err != nil {
		t.Fatal(err)
	}
	if hr := jr.Hires; hr == nil || *hr.Scale != 1.5 || hr.Upscaler != "lanczos" || *hr.Steps != 12 || *hr.Denoise != 0.4 || hr.Width != nil {
		t.Fatalf("translated %+v", jr.Hires)
	}
	// defaults: scale 2, Latent, the job's steps, A1111's denoise; a
	// resize size wins over the scale
	jr, err = translate(`{"prompt":"x","enable_hr":true,"hr_second_pass_steps":0}`, false)
	if err != nil || *jr.Hires.Scale != 2 || jr.Hires.Upscaler != "latent" || jr.Hires.Steps != nil || *jr.Hires.Denoise != defaultHiresDenoise {
		t.Fatalf("defaults %+v, %v", jr.Hires, err)
	}
	jr, err = translate(`{"prompt":"x","enable_hr":true,"hr_scale":2,"hr_resize_x":1024,"hr_resize_y":0}`, false)
	if err != nil || jr.Hires.Scale != nil || *jr.Hires.Width != 1024 || *jr.Hires.Height != 0 {
		t.Fatalf("resize %+v, %v", jr.Hires, err)
	}
	jr, err = translate(`{"prompt":"x","enable_hr":false,"hr_scale":3}`, false)
	if err != nil || jr.Hires != nil {
		t.Fatalf("enable_hr false: %+v, %v", jr.Hires, err)
	}
	// clients send the whole payload to img2img too: defaults pass there
	if _, err := translate(`{"prompt":"x","init_images":["AAAA"],"enable_hr":false,"hr_scale":2,"hr_upscaler":"Latent"}`, true); err != nil {
		t.Fatalf("img2img with default hires fields: %v", err)
	}
	for name, c := range map[string]struct {
		body    string
		img2img bool
		field   string
	}{
		"esrgan":        {`{"prompt":"x","enable_hr":true,"hr_upscaler":"R-ESRGAN 4x+"}`, false, "hr_upscaler"},
		"hr on img2img": {`{"prompt":"x","init_images":["AAAA"],"enable_hr":true}`, true, "enable_hr"},
	} {
		_, err := translate(c.body, c.img2img)
		if err == nil || err.Field != c.field {
			t.Errorf("%s: error %v, want one on field %q", name, err, c.field)
		}
	}
}
