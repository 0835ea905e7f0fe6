package app_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/server/config"
)

// a1111Txt2Img is a request as AUTOMATIC1111's published schema
// (StableDiffusionProcessingTxt2Img) defines it, with the defaults its
// client libraries send.
func a1111Txt2Img(prompt string, over map[string]any) map[string]any {
	r := map[string]any{
		"prompt": prompt, "negative_prompt": "blurry", "styles": []any{}, "seed": 1234, "subseed": -1, "subseed_strength": 0,
		"seed_resize_from_h": -1, "seed_resize_from_w": -1, "sampler_name": "DPM++ 2M", "scheduler": "Karras", "batch_size": 2,
		"n_iter": 1, "steps": 3, "cfg_scale": 5, "width": 64, "height": 64, "restore_faces": false, "tiling": false,
		"do_not_save_samples": false, "do_not_save_grid": false, "eta": nil, "denoising_strength": 0.7, "s_min_uncond": nil,
		"s_churn": nil, "s_tmax": nil, "s_tmin": nil, "s_noise": nil, "override_settings": map[string]any{},
		"override_settings_restore_afterwards": true, "refiner_checkpoint": nil, "refiner_switch_at": nil,
		"disable_extra_networks": false, "comments": map[string]any{}, "enable_hr": false, "firstphase_width": 0,
		"firstphase_height": 0, "hr_scale": 2, "hr_upscaler": nil, "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0,
		"hr_checkpoint_name": nil, "hr_sampler_name": nil, "hr_prompt": "", "hr_negative_prompt": "", "sampler_index": "Euler",
		"script_name": nil, "script_args": []any{}, "send_images": true, "save_images": false, "alwayson_scripts": map[string]any{},
	}
	for k, v := range over {
		r[k] = v
	}
	return r
}

// a1111Info decodes the "info" JSON string of a generation response.
func a1111Info(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	var info map[string]any
	if err := json.Unmarshal([]byte(m["info"].(string)), &info); err != nil {
		t.Fatalf("info is not a JSON string: %v (%v)", err, m["info"])
	}
	return info
}

func TestA1111API(t *testing.T) {
	s := startServer(t, nil)

	// Catalogs in A1111's shapes.
	models := s.do("GET", "/sdapi/v1/sd-models", "", nil)
	var ml []map[string]any
	if err := json.Unmarshal(models.body, &ml); err != nil || len(ml) != 1 || ml[0]["model_name"] != "tiny" {
		t.Fatalf("sd-models: %d %s", models.status, models.body)
	}
	hash, _ := ml[0]["hash"].(string)
	if len(hash) != 10 || ml[0]["title"] != "tiny ["+hash+"]" || !strings.HasPrefix(ml[0]["sha256"].(string), hash) {
		t.Fatalf("sd-models entry %v", ml[0])
	}
	var samplers []map[string]any
	_ = json.Unmarshal(s.do("GET", "/sdapi/v1/samplers", "", nil).body, &samplers)
	found := false
	for _, it := range samplers {
		if it["name"] == "DPM++ 2M" && strings.Contains(string(mustJSON(it["aliases"])), "dpmpp_2m_karras") {
			found = true
		}
	}
	if !found {
		t.Fatalf("samplers lack DPM++ 2M: %v", samplers)
	}
	if r := s.do("GET", "/sdapi/v1/schedulers", "", nil); !strings.Contains(string(r.body), `"label":"Karras"`) {
		t.Fatalf("schedulers: %s", r.body)
	}
	for _, path := range []string{"loras", "embeddings", "upscalers", "memory"} {
		if r := s.do("GET", "/sdapi/v1/"+path, "", nil); r.status != http.StatusOK || !json.Valid(r.body) {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
	}
	if ram := s.do("GET", "/sdapi/v1/memory", "", nil).json(t)["ram"].(map[string]any); ram["total"].(float64) <= 0 {
		t.Fatalf("memory: %v", ram)
	}

	// txt2img: A1111 names mapped, seeds seed+i, info and parameters.
	r := s.do("POST", "/sdapi/v1/txt2img", "", a1111Txt2Img("a lighthouse", nil))
	if r.status != http.StatusOK {
		t.Fatalf("txt2img: %d %s", r.status, r.body)
	}
	m := r.json(t)
	images := m["images"].([]any)
	info := a1111Info(t, m)
	if len(images) != 2 || info["sampler_name"] != "DPM++ 2M" || info["sd_model_hash"] != hash ||
		mustJSON(info["all_seeds"]) != "[1234,1235]" || len(info["infotexts"].([]any)) != 2 {
		t.Fatalf("txt2img response: images %d, info %v", len(images), info)
	}
	params := m["parameters"].(map[string]any)
	if params["sampler_name"] != "DPM++ 2M" || params["scheduler"] != "karras" || params["seed"].(float64) != 1234 || params["steps"].(float64) != 3 {
		t.Fatalf("parameters echo %v", params)
	}
	first, err := base64.StdEncoding.DecodeString(images[0].(string))
	if err != nil {
		t.Fatal(err)
	}
	if img, err := png.Decode(bytes.NewReader(first)); err != nil || img.Bounds().Dx() != 64 {
		t.Fatalf("image: %v", err)
	}
	// hires fix: the image at twice the size, A1111's hires fields in its infotext
	r = s.do("POST", "/sdapi/v1/txt2img", "", a1111Txt2Img("a lighthouse", map[string]any{"enable_hr": true, "hr_scale": 2,
		"hr_upscaler": "Lanczos", "hr_second_pass_steps": 2, "denoising_strength": 0.5, "batch_size": 1}))
	if r.status != 200 {
		t.Fatalf("hires txt2img: %d %s", r.status, r.body)
	}
	hm := r.json(t)
	hraw, _ := base64.StdEncoding.DecodeString(hm["images"].([]any)[0].(string))
	if img, err := png.Decode(bytes.NewReader(hraw)); err != nil || img.Bounds().Dx() != 128 {
		t.Fatalf("hires image: %v", err)
	}
	if it := a1111Info(t, hm)["infotexts"].([]any)[0].(string); !strings.Contains(it, "Size: 64x64") ||
		!strings.Contains(it, "Denoising strength: 0.5, Clip skip: 2, Hires upscale: 2, Hires steps: 2, Hires upscaler: Lanczos") &&
			!strings.Contains(it, "Denoising strength: 0.5, Hires upscale: 2, Hires steps: 2, Hires upscaler: Lanczos") {
		t.Fatalf("hires infotext %q", it)
	}
	wantText := "a lighthouse\nNegative prompt: blurry\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5, Seed: 1234, Size: 64x64, Model hash: " +
		hash + ", Model: tiny, RNG: CPU, Version: kiln "
	infotext := info["infotexts"].([]any)[0].(string)
	if !strings.HasPrefix(infotext, wantText) {
		t.Fatalf("infotext\n%s\nwant prefix\n%s", infotext, wantText)
	}

	// png-info reads the image's parameters back.
	pi := s.do("POST", "/sdapi/v1/png-info", "", map[string]any{"image": "data:image/png;base64," + images[0].(string)}).json(t)
	pp := pi["parameters"].(map[string]any)
	if pi["info"] != infotext || pp["Prompt"] != "a lighthouse" || pp["Negative prompt"] != "blurry" || pp["Sampler"] != "DPM++ 2M" ||
		pp["Schedule type"] != "Karras" || pp["Seed"] != "1234" || pp["Size-1"] != "64" || pp["Model hash"] != hash {
		t.Fatalf("png-info %v", pi)
	}

	// Options: clip skip and the checkpoint by title apply to later jobs.
	if r := s.do("POST", "/sdapi/v1/options", "", map[string]any{"CLIP_stop_at_last_layers": 2, "sd_model_checkpoint": "tiny [" + hash + "]"}); r.status != http.StatusOK {
		t.Fatalf("set options: %d %s", r.status, r.body)
	}
	opts := s.do("GET", "/sdapi/v1/options", "", nil).json(t)
	if opts["CLIP_stop_at_last_layers"].(float64) != 2 || opts["sd_model_checkpoint"] != "tiny ["+hash+"]" {
		t.Fatalf("options %v", opts)
	}
	for _, c := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"sd_model_checkpoint": "nope.safetensors"}, "sd_model_checkpoint"},
		{map[string]any{"CLIP_stop_at_last_layers": 40}, "CLIP_stop_at_last_layers"},
		{map[string]any{"show_progressbar": true}, "show_progressbar"},
	} {
		if r := s.do("POST", "/sdapi/v1/options", "", c.body); r.status != 400 || r.json(t)["field"] != c.field {
			t.Errorf("options %v: %d %s", c.body, r.status, r.body)
		}
	}

	// img2img from the first image, with the options' clip skip.
	r = s.do("POST", "/sdapi/v1/img2img", "", a1111Txt2Img("a lighthouse at night", map[string]any{
		"init_images": []any{images[0]}, "denoising_strength": 0.5, "batch_size": 1, "sampler_name": "Euler a", "scheduler": "Automatic",
		"resize_mode": 0, "mask": nil, "include_init_images": false, "inpainting_fill": 0}))
	if r.status != http.StatusOK {
		t.Fatalf("img2img: %d %s", r.status, r.body)
	}
	info = a1111Info(t, r.json(t))
	text := info["infotexts"].([]any)[0].(string)
	if !strings.Contains(text, "Sampler: Euler a, Schedule type: Automatic") || !strings.Contains(text, "Denoising strength: 0.5, Clip skip: 2") ||
		info["clip_skip"].(float64) != 2 {
		t.Fatalf("img2img infotext %q / %v", text, info)
	}

	// What Kiln cannot do is refused, naming the field.
	for _, c := range []struct {
		path  string
		over  map[string]any
		field string
	}{
		{"txt2img", map[string]any{"enable_hr": true, "hr_upscaler": "ESRGAN_4x"}, "hr_upscaler"},
		{"txt2img", map[string]any{"sampler_name": "DPM++ 3M SDE"}, "sampler_name"},
		{"txt2img", map[string]any{"scheduler": "exponential"}, "scheduler"},
		{"txt2img", map[string]any{"colour": "red"}, "colour"},
		{"txt2img", map[string]any{"width": 65}, "width"},
		{"txt2img", map[string]any{"steps": "many"}, "steps"},
		{"img2img", map[string]any{}, "init_images"},
		{"img2img", map[string]any{"init_images": []any{"not base64!"}}, "init_images"},
	} {
		r := s.do("POST", "/sdapi/v1/"+c.path, "", a1111Txt2Img("x", c.over))
		if r.status != 400 || r.json(t)["field"] != c.field || r.json(t)["detail"] == "" {
			t.Errorf("%s %v: %d %s", c.path, c.over, r.status, r.body)
		}
	}

	// A POST to a GET route is 405 naming the allowed method.
	r = s.do("POST", "/sdapi/v1/samplers", "", map[string]any{})
	if r.status != http.StatusMethodNotAllowed || !strings.Contains(r.header.Get("Allow"), "GET") {
		t.Fatalf("POST samplers: %d allow=%q %s", r.status, r.header.Get("Allow"), r.body)
	}
}

func TestA1111ProgressAndInterrupt(t *testing.T) {
	s := startServer(t, func(c *config.Config) { c.PreviewEvery = 1 })
	// Idle: nothing running.
	if p := s.do("GET", "/sdapi/v1/progress", "", nil).json(t); p["state"].(map[string]any)["job_count"].(float64) != 0 || p["current_image"] != nil {
		t.Fatalf("idle progress %v", p)
	}
	done := make(chan response, 1)
	go func() {
		done <- s.do("POST", "/sdapi/v1/txt2img", "", a1111Txt2Img("long", map[string]any{"steps": 60, "width": 128, "height": 128, "batch_size": 1,
			"override_settings": map[string]any{"CLIP_stop_at_last_layers": 1}}))
	}()
	deadline := time.Now().Add(60 * time.Second)
	var p map[string]any
	for {
		p = s.do("GET", "/sdapi/v1/progress", "", nil).json(t)
		st := p["state"].(map[string]any)
		if st["sampling_step"].(float64) > 0 && p["current_image"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress with a preview: %v", p)
		}
		select {
		case r := <-done:
			t.Fatalf("the generation ended before progress was seen: %d %s", r.status, r.body)
		default:
		}
		time.Sleep(20 * time.Millisecond)
	}
	raw, err := base64.StdEncoding.DecodeString(p["current_image"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if img, err := png.Decode(bytes.NewReader(raw)); err != nil || img.Bounds().Dx() < 8 {
		t.Fatalf("current_image: %v", err)
	}
	if pr := p["progress"].(float64); pr <= 0 || pr >= 1 || p["state"].(map[string]any)["sampling_steps"].(float64) != 60 {
		t.Fatalf("progress %v", p)
	}
	if r := s.do("POST", "/sdapi/v1/interrupt", "", nil); r.status != http.StatusOK {
		t.Fatalf("interrupt: %d %s", r.status, r.body)
	}
	select {
	case r := <-done:
		m := r.json(t)
		if r.status != http.StatusOK || len(m["images"].([]any)) != 0 {
			t.Fatalf("interrupted txt2img: %d %s", r.status, r.body)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("interrupt did not stop the generation")
	}

	// Tenant auth as elsewhere: once tenants exist, a key is needed.
	key := s.tenant("a1111-user", nil)
	if r := s.do("GET", "/sdapi/v1/sd-models", "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("keyless with tenants: %d", r.status)
	}
	if r := s.do("GET", "/sdapi/v1/options", key, nil); r.status != http.StatusOK || r.json(t)["CLIP_stop_at_last_layers"].(float64) != 1 {
		t.Fatalf("options with a key: %d %s", r.status, r.body)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
