package app_test

import (
	"bytes"
	"encoding/base64"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"testing"
)

// formPart is a multipart field (file "") or file.
type formPart struct {
	name, file string
	data       []byte
}

// postForm sends a multipart/form-data request.
func (s *server) postForm(path, key string, parts ...formPart) response {
	s.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var w io.Writer
		var err error
		if p.file != "" {
			w, err = mw.CreateFormFile(p.name, p.file)
		} else {
			w, err = mw.CreateFormField(p.name)
		}
		if err != nil {
			s.t.Fatal(err)
		}
		w.Write(p.data)
	}
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, s.base+path, &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// b64Images decodes an OpenAI response's b64_json images.
func b64Images(t *testing.T, r response) [][]byte {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var out [][]byte
	for _, d := range r.json(t)["data"].([]any) {
		raw, err := base64.StdEncoding.DecodeString(d.(map[string]any)["b64_json"].(string))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, raw)
	}
	return out
}

// TestOpenAIEditsAndVariations runs both multipart endpoints end to end:
// an edit repaints the mask's transparent quarter and leaves the pixels
// far from it as they were; a variation of a Kiln image reuses its prompt.
func TestOpenAIEditsAndVariations(t *testing.T) {
	s := startServer(t, nil)
	src := b64Images(t, s.do("POST", "/v1/images/generations", "", map[string]any{"prompt": "a teapot", "size": "64x64",
		"response_format": "b64_json", "steps": 2, "seed": 5}))[0]
	srcImg, err := png.Decode(bytes.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	mask := image.NewNRGBA(image.Rect(0, 0, 64, 64))
	draw.Draw(mask, mask.Rect, image.NewUniform(color.NRGBA{A: 255}), image.Point{}, draw.Src)
	draw.Draw(mask, image.Rect(0, 0, 32, 32), image.NewUniform(color.NRGBA{}), image.Point{}, draw.Src)
	var mb bytes.Buffer
	png.Encode(&mb, mask)

	out := b64Images(t, s.postForm("/v1/images/edits", "", formPart{"image[]", "src.png", src}, formPart{"mask", "mask.png", mb.Bytes()},
		formPart{"prompt", "", []byte("a red teapot")}, formPart{"response_format", "", []byte("b64_json")},
		formPart{"steps", "", []byte("3")}, formPart{"mask_blur", "", []byte("0")}, formPart{"seed", "", []byte("7")}))
	edited, err := png.Decode(bytes.NewReader(out[0]))
	if err != nil || edited.Bounds() != srcImg.Bounds() {
		t.Fatalf("edited image: %v %v", err, edited)
	}
	changed := 0
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			same := edited.At(x, y) == srcImg.At(x, y)
			if x >= 40 || y >= 40 { // well outside the mask (and any latent-cell bleed)
				if !same {
					t.Fatalf("pixel (%d,%d) outside the mask changed: %v -> %v", x, y, srcImg.At(x, y), edited.At(x, y))
				}
			} else if x < 32 && y < 32 && !same {
				changed++
			}
		}
	}
	if changed < 32*32/2 {
		t.Fatalf("only %d of the masked pixels changed", changed)
	}
	job := s.do("GET", "/v1/jobs?limit=1", "", nil).json(t)["jobs"].([]any)[0].(map[string]any)
	if p := job["params"].(map[string]any); p["mask"] == nil || p["mask"] == "" || p["strength"] != 1.0 || p["prompt"] != "a red teapot" {
		t.Fatalf("edit job params %v", p)
	}

	// a variation: the image's own prompt, img2img at 0.7, two seeds
	r := s.postForm("/v1/images/variations", "", formPart{"image", "src.png", src}, formPart{"n", "", []byte("2")},
		formPart{"response_format", "", []byte("b64_json")}, formPart{"steps", "", []byte("3")})
	vars := b64Images(t, r)
	if len(vars) != 2 || bytes.Equal(vars[0], vars[1]) {
		t.Fatalf("%d variations (identical: %v)", len(vars), len(vars) == 2 && bytes.Equal(vars[0], vars[1]))
	}
	if rp := r.json(t)["data"].([]any)[0].(map[string]any)["revised_prompt"]; rp != "a teapot" {
		t.Fatalf("variation prompt %v", rp)
	}
	job = s.do("GET", "/v1/jobs?limit=1", "", nil).json(t)["jobs"].([]any)[0].(map[string]any)
	if p := job["params"].(map[string]any); p["strength"] != 0.7 || p["init_image"] != true {
		t.Fatalf("variation job params %v", p)
	}

	// errors keep OpenAI's shape; tenants' auth applies
	r = s.postForm("/v1/images/edits", "", formPart{"image", "src.png", src}, formPart{"mask", "m.png", src}, formPart{"prompt", "", []byte("x")})
	if e, _ := r.json(t)["error"].(map[string]any); r.status != 400 || e["param"] != "mask" || e["type"] != "invalid_request_error" {
		t.Fatalf("opaque mask: %d %s", r.status, r.body)
	}
	s.tenant("acme", nil)
	for _, path := range []string{"/v1/images/edits", "/v1/images/variations"} {
		r := s.postForm(path, "", formPart{"image", "src.png", src}, formPart{"prompt", "", []byte("x")})
		if e, _ := r.json(t)["error"].(map[string]any); r.status != 401 || e["code"] != "invalid_api_key" {
			t.Fatalf("%s without a key: %d %s", path, r.status, r.body)
		}
	}
}
