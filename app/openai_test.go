package app_test

import (
	"bytes"
	"encoding/base64"
	"image/png"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestOpenAIImagesEndpoint(t *testing.T) {
	s := startServer(t, nil)
	// b64_json
	r := s.do("POST", "/v1/images/generations", "", map[string]any{
		"model": "dall-e-3", "prompt": "a teapot", "n": 2, "size": "64x64", "response_format": "b64_json",
		"quality": "standard", "user": "u-1", "steps": 3})
	if r.status != http.StatusOK {
		t.Fatalf("b64_json: %d %s", r.status, r.body)
	}
	m := r.json(t)
	data := m["data"].([]any)
	if len(data) != 2 || m["created"].(float64) <= 0 {
		t.Fatalf("response %v", m)
	}
	for _, d := range data {
		d := d.(map[string]any)
		raw, err := base64.StdEncoding.DecodeString(d["b64_json"].(string))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(raw))
		if err != nil || img.Bounds().Dx() != 64 || d["revised_prompt"] != "a teapot" {
			t.Fatalf("image: %v %v", err, d["revised_prompt"])
		}
	}
	// url: signed, fetchable without a key, not with a tampered signature.
	r = s.do("POST", "/v1/images/generations", "", map[string]any{"prompt": "a teapot", "size": "64x64", "quality": "low", "steps": 2})
	if r.status != http.StatusOK {
		t.Fatalf("url: %d %s", r.status, r.body)
	}
	link := r.json(t)["data"].([]any)[0].(map[string]any)["url"].(string)
	resp, err := http.Get(link)
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("GET signed url: %v %v", err, resp)
	}
	resp.Body.Close()
	u, _ := url.Parse(link)
	q := u.Query()
	q.Set("tenant", "someone-else")
	u.RawQuery = q.Encode()
	if resp, _ := http.Get(u.String()); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("tampered url: %d", resp.StatusCode)
	}
	// The quality mapped to a profile.
	jobs := s.do("GET", "/v1/jobs?limit=1", "", nil).json(t)["jobs"].([]any)
	if p := jobs[0].(map[string]any)["params"].(map[string]any); p["profile"] != "speed_first" {
		t.Fatalf("quality low ran with profile %v", p["profile"])
	}
	// Errors in OpenAI's shape, naming the parameter.
	for _, c := range []struct {
		body  map[string]any
		param string
	}{
		{map[string]any{"prompt": "x", "size": "big"}, "size"},
		{map[string]any{"prompt": "x", "size": "4096x4096"}, "size"},
		{map[string]any{"prompt": "x", "n": 11}, "n"},
		{map[string]any{"prompt": "x", "response_format": "gif"}, "response_format"},
		{map[string]any{"prompt": "x", "quality": "ultra"}, "quality"},
		{map[string]any{"prompt": "x", "colour": "red"}, "colour"},
		{map[string]any{"prompt": ""}, "prompt"},
		{map[string]any{"prompt": "x", "model": "not-a-model"}, "model"},
	} {
		r := s.do("POST", "/v1/images/generations", "", c.body)
		e, _ := r.json(t)["error"].(map[string]any)
		if r.status != 400 || e == nil || e["type"] != "invalid_request_error" || e["param"] != c.param || e["message"] == "" {
			t.Errorf("%v: %d %s", c.body, r.status, r.body)
		}
	}
	if !strings.Contains(string(s.do("GET", "/metrics", "", nil).body), `kiln_jobs_submitted_total{source="openai"} 2`) {
		t.Error("openai submissions not counted")
	}
}

func TestOpenAIErrorsForBadKey(t *testing.T) {
	s := startServer(t, nil)
	s.tenant("acme", nil)
	r := s.do("POST", "/v1/images/generations", "kiln_bad", map[string]any{"prompt": "x"})
	e, _ := r.json(t)["error"].(map[string]any)
	if r.status != 401 || e["code"] != "invalid_api_key" || e["type"] != "invalid_request_error" {
		t.Fatalf("bad key: %d %s", r.status, r.body)
	}
}
