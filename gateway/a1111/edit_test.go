package a1111

import (
	"bytes"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/kiln-project/kiln/gateway/auth"
)

// TestEditFields checks the translation of A1111's variation-seed and
// inpainting fields into a native job request, and their refusals.
func TestEditFields(t *testing.T) {
	h := New(stubBackend{}, 1<<16, time.Second)
	p := auth.Principal{Tenant: "t"}
	translate := func(body string, img2img bool) (string, error) {
		g, _, err := h.decodeRequest(httptest.NewRequest("POST", "/sdapi/v1/img2img", bytes.NewReader([]byte(body))), img2img)
		if err != nil {
			return err.Field, err
		}
		jr, err := h.jobRequest(g, p, img2img)
		if err != nil {
			return err.Field, err
		}
		_ = jr
		return "", nil
	}
	g, _, aerr := h.decodeRequest(httptest.NewRequest("POST", "/", bytes.NewReader([]byte(
		`{"prompt":"x","init_images":["AAAA"],"mask":"BBBB","mask_blur":8,"inpainting_fill":2,"inpaint_full_res":true,"inpaint_full_res_padding":16,"subseed":5,"subseed_strength":0.25}`))), true)
	if aerr != nil {
		t.Fatal(aerr)
	}
	jr, aerr := h.jobRequest(g, p, true)
	if aerr != nil {
		t.Fatal(aerr)
	}
	if jr.Mask != "BBBB" || *jr.MaskBlur != 8 || jr.InpaintFill != "latent_noise" || !jr.InpaintFullRes || *jr.InpaintFullResPadding != 16 ||
		*jr.Subseed != 5 || *jr.SubseedStrength != 0.25 {
		t.Fatalf("translated %+v", jr)
	}
	// A1111's defaults: "only masked" with no padding; subseed -1 is random
	g, _, _ = h.decodeRequest(httptest.NewRequest("POST", "/", bytes.NewReader([]byte(
		`{"prompt":"x","init_images":["AAAA"],"mask":"BBBB","subseed":-1,"subseed_strength":0.5}`))), true)
	jr, aerr = h.jobRequest(g, p, true)
	if aerr != nil || !jr.InpaintFullRes || *jr.InpaintFullResPadding != 0 || jr.Subseed != nil || jr.MaskBlur != nil {
		t.Fatalf("defaults %+v %v", jr, aerr)
	}
	for name, c := range map[string]struct {
		body    string
		img2img bool
		field   string
	}{
		"mask on txt2img":  {`{"prompt":"x","mask":"BBBB"}`, false, "mask"},
		"blur no mask":     {`{"prompt":"x","init_images":["AAAA"],"mask_blur":9}`, true, "mask_blur"},
		"unknown fill":     {`{"prompt":"x","init_images":["AAAA"],"mask":"BBBB","inpainting_fill":7}`, true, "inpainting_fill"},
		"negative subseed": {`{"prompt":"x","subseed":-5,"subseed_strength":0.5}`, false, "subseed"},
	} {
		field, err := translate(c.body, c.img2img)
		if err == nil || field != c.field {
			t.Errorf("%s: error %v on field %q, want field %q", name, err, field, c.field)
		}
	}
}
