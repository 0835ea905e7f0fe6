package openai

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/core/imagedecode"
	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
)

const testBoundary = "kilnTestBoundary0123456789"

// testDecode decodes an upload as the gateway does, within small limits.
func testDecode(ctx context.Context, field string, data []byte) (image.Image, *apierr.Error) {
	img, _, err := imagedecode.Decode(ctx, data, imagedecode.Limits{MaxPixels: 1 << 16, MaxSide: 1024, MaxBytes: 1 << 20}, nil)
	if err != nil {
		return nil, apierr.Invalid(field, "%s does not decode: %v", field, err)
	}
	return img, nil
}

// part is one multipart part: a field (file "") or a file.
type part struct {
	name, file string
	data       []byte
}

func multipartBody(t testing.TB, parts []part) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.SetBoundary(testBoundary); err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		var w interface{ Write([]byte) (int, error) }
		var err error
		if p.file != "" {
			w, err = mw.CreateFormFile(p.name, p.file)
		} else {
			w, err = mw.CreateFormField(p.name)
		}
		if err != nil {
			t.Fatal(err)
		}
		w.Write(p.data)
	}
	mw.Close()
	return buf.Bytes(), mw.FormDataContentType()
}

func pngBytes(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// opaque is an opaque RGBA image.
func opaque(w, h int) *image.NRGBA {
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range m.Pix {
		m.Pix[i] = 200
		if i%4 == 3 {
			m.Pix[i] = 255
		}
	}
	return m
}

// holed is opaque with a transparent top-left quarter and a half
// transparent pixel at (w-1, h-1).
func holed(w, h int) *image.NRGBA {
	m := opaque(w, h)
	for y := 0; y < h/2; y++ {
		for x := 0; x < w/2; x++ {
			m.SetNRGBA(x, y, color.NRGBA{A: 0})
		}
	}
	m.SetNRGBA(w-1, h-1, color.NRGBA{R: 10, A: 128})
	return m
}

func postForm(t *testing.T, h *Handler, path string, parts []part) *httptest.ResponseRecorder {
	t.Helper()
	body, ct := multipartBody(t, parts)
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	r.Header.Set("Content-Type", ct)
	if strings.HasSuffix(path, "edits") {
		h.Edits(w, r, auth.Principal{Tenant: "acme"})
	} else {
		h.Variations(w, r, auth.Principal{Tenant: "acme"})
	}
	return w
}

// decodeMask reads the mask a job request carries.
func decodeMask(t *testing.T, b64 string) image.Image {
	t.Helper()
	data, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	m, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func gray(m image.Image, x, y int) uint8 { return color.GrayModel.Convert(m.At(x, y)).(color.Gray).Y }

func TestEditsMapTheMaskTransparencyToAnInpaintingJob(t *testing.T) {
	f := &fake{final: succeeded()}
	h := New(f, 1<<20, time.Minute)
	img := pngBytes(t, opaque(16, 8))
	w := postForm(t, h, "/v1/images/edits", []part{{"image[]", "in.png", img}, {"mask", "mask.png", pngBytes(t, holed(16, 8))},
		{"prompt", "", []byte("a fox")}, {"n", "", []byte("2")}, {"size", "", []byte("64x32")}, {"model", "", []byte("gpt-image-1")},
		{"response_format", "", []byte("b64_json")}, {"seed", "", []byte("9")}, {"mask_blur", "", []byte("0")}})
	if w.Code != http.StatusOK || w.Header().Get(JobIDHeader) != "job1" {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	g := f.got
	if g.Prompt != "a fox" || g.Model != "" || *g.N != 2 || *g.Width != 64 || *g.Height != 32 || *g.Seed != 9 || *g.MaskBlur != 0 {
		t.Fatalf("job request %+v", g)
	}
	if g.InitImage != base64.StdEncoding.EncodeToString(img) {
		t.Fatal("the init image is not the uploaded image")
	}
	if g.Strength == nil || *g.Strength != MaskedEditStrength {
		t.Fatalf("strength %v, want %v", g.Strength, MaskedEditStrength)
	}
	m := decodeMask(t, g.Mask)
	if m.Bounds().Dx() != 16 || m.Bounds().Dy() != 8 {
		t.Fatalf("mask is %v", m.Bounds())
	}
	// transparent = repaint (white), opaque = keep (black), half = between
	if gray(m, 0, 0) != 255 || gray(m, 7, 3) != 255 || gray(m, 8, 0) != 0 || gray(m, 0, 4) != 0 || gray(m, 15, 7) != 127 {
		t.Fatalf("mask values %d %d %d %d %d", gray(m, 0, 0), gray(m, 7, 3), gray(m, 8, 0), gray(m, 0, 4), gray(m, 15, 7))
	}
	var resp Response
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || len(resp.Data) != 2 || resp.Data[0].B64JSON == "" {
		t.Fatalf("response %s", w.Body)
	}
}

func TestEditsWithoutMask(t *testing.T) {
	f := &fake{final: succeeded()}
	h := New(f, 1<<20, time.Minute)
	// an image with transparent pixels is its own mask
	w := postForm(t, h, "/v1/images/edits", []part{{"image", "in.png", pngBytes(t, holed(8, 8))}, {"prompt", "", []byte("a fox")},
		{"strength", "", []byte("0.9")}})
	if w.Code != http.StatusOK {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if m := decodeMask(t, f.got.Mask); gray(m, 0, 0) != 255 || gray(m, 5, 5) != 0 || *f.got.Strength != 0.9 {
		t.Fatalf("mask from the image's alpha: %d %d, strength %v", gray(m, 0, 0), gray(m, 5, 5), *f.got.Strength)
	}
	// an opaque image is edited whole: img2img at the validator's strength
	w = postForm(t, h, "/v1/images/edits", []part{{"image", "in.png", pngBytes(t, opaque(8, 8))}, {"prompt", "", []byte("a fox")},
		{"response_format", "", []byte("url")}})
	if w.Code != http.StatusOK || f.got.Mask != "" || f.got.InitImage == "" || f.got.Strength != nil {
		t.Fatalf("%d %s: mask %q strength %v", w.Code, w.Body, f.got.Mask, f.got.Strength)
	}
	var resp Response
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || resp.Data[0].URL != "https://kiln/i/job1-0" {
		t.Fatalf("url response %s", w.Body)
	}
}

func TestVariations(t *testing.T) {
	f := &fake{final: succeeded()}
	h := New(f, 1<<20, time.Minute)
	// a Kiln (A1111-format) PNG brings its prompts along
	var buf bytes.Buffer
	params := "a lighthouse\nNegative prompt: fog\nSteps: 20, Sampler: Euler, Seed: 1, Size: 8x8"
	if err := imageio.WritePNG(&buf, opaque(8, 8), imageio.Text{Key: imageio.ParametersKey, Value: params}); err != nil {
		t.Fatal(err)
	}
	w := postForm(t, h, "/v1/images/variations", []part{{"image", "in.png", buf.Bytes()}, {"n", "", []byte("3")},
		{"size", "", []byte("256x256")}, {"response_format", "", []byte("b64_json")}})
	g := f.got
	if w.Code != http.StatusOK || g.Prompt != "a lighthouse" || g.NegativePrompt != "fog" || *g.N != 3 || *g.Width != 256 {
		t.Fatalf("%d %s: %+v", w.Code, w.Body, g)
	}
	if *g.Strength != VariationStrength || !g.AllowEmptyPrompt || g.Mask != "" || g.InitImage != base64.StdEncoding.EncodeToString(buf.Bytes()) {
		t.Fatalf("variation job %+v", g)
	}
	// without parameters: no prompt; Kiln's extension fields override
	w = postForm(t, h, "/v1/images/variations", []part{{"image", "in.png", pngBytes(t, opaque(8, 8))}})
	if w.Code != http.StatusOK || f.got.Prompt != "" || !f.got.AllowEmptyPrompt {
		t.Fatalf("%d %s: %+v", w.Code, w.Body, f.got)
	}
	w = postForm(t, h, "/v1/images/variations", []part{{"image", "in.png", buf.Bytes()}, {"prompt", "", []byte("a boat")},
		{"strength", "", []byte("0.3")}, {"steps", "", []byte("4")}})
	if w.Code != http.StatusOK || f.got.Prompt != "a boat" || *f.got.Strength != 0.3 || *f.got.Steps != 4 {
		t.Fatalf("%d %s: %+v", w.Code, w.Body, f.got)
	}
}

func TestEditErrorsHaveOpenAIsShape(t *testing.T) {
	img := pngBytes(t, opaque(8, 8))
	mask := pngBytes(t, holed(8, 8))
	var jpg bytes.Buffer
	jpeg.Encode(&jpg, opaque(8, 8), nil)
	prompt := part{"prompt", "", []byte("x")}
	for _, c := range []struct {
		name   string
		path   string
		parts  []part
		status int
		param  string
	}{
		{"no image", "edits", []part{prompt}, 400, "image"},
		{"two images", "edits", []part{{"image[]", "a.png", img}, {"image[]", "b.png", img}, prompt}, 400, "image"},
		{"not an image", "edits", []part{{"image", "a.png", []byte("GIF89a")}, prompt}, 400, "image"},
		{"opaque mask", "edits", []part{{"image", "a.png", img}, {"mask", "m.png", img}, prompt}, 400, "mask"},
		{"jpeg mask", "edits", []part{{"image", "a.png", img}, {"mask", "m.jpg", jpg.Bytes()}, prompt}, 400, "mask"},
		{"mask size", "edits", []part{{"image", "a.png", img}, {"mask", "m.png", pngBytes(t, holed(16, 8))}, prompt}, 400, "mask"},
		{"two masks", "edits", []part{{"image", "a.png", img}, {"mask", "m.png", mask}, {"mask", "m.png", mask}, prompt}, 400, "mask"},
		{"n", "edits", []part{{"image", "a.png", img}, prompt, {"n", "", []byte("11")}}, 400, "n"},
		{"n not a number", "edits", []part{{"image", "a.png", img}, prompt, {"n", "", []byte("two")}}, 400, "n"},
		{"size", "edits", []part{{"image", "a.png", img}, prompt, {"size", "", []byte("big")}}, 400, "size"},
		{"response_format", "edits", []part{{"image", "a.png", img}, prompt, {"response_format", "", []byte("gif")}}, 400, "response_format"},
		{"stream", "edits", []part{{"image", "a.png", img}, prompt, {"stream", "", []byte("true")}}, 400, "stream"},
		{"blur without mask", "edits", []part{{"image", "a.png", img}, prompt, {"mask_blur", "", []byte("4")}}, 400, "mask"},
		{"unknown field", "edits", []part{{"image", "a.png", img}, prompt, {"style", "", []byte("vivid")}}, 400, "style"},
		{"duplicate field", "edits", []part{{"image", "a.png", img}, prompt, prompt}, 400, "prompt"},
		{"prompt as a file", "edits", []part{{"image", "a.png", img}, {"prompt", "p.txt", []byte("x")}}, 400, "prompt"},
		{"variation without image", "variations", []part{{"n", "", []byte("1")}}, 400, "image"},
		{"variation mask", "variations", []part{{"image", "a.png", img}, {"mask", "m.png", mask}}, 400, "mask"},
		{"variation n", "variations", []part{{"image", "a.png", img}, {"n", "", []byte("0")}}, 400, "n"},
		{"variation prompt too long", "variations", []part{{"image", "a.png", img}, {"prompt", "", bytes.Repeat([]byte("x"), MaxFormValue+1)}}, 413, "prompt"},
	} {
		f := &fake{final: succeeded()}
		w := postForm(t, New(f, 1<<20, time.Minute), "/v1/images/"+c.path, c.parts)
		var e ErrorBody
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || w.Code != c.status || e.Error.Type != "invalid_request_error" || e.Error.Message == "" {
			t.Errorf("%s: %d %s", c.name, w.Code, w.Body)
			continue
		}
		if e.Error.Param == nil || *e.Error.Param != c.param {
			t.Errorf("%s: param %v, want %s (%s)", c.name, e.Error.Param, c.param, e.Error.Message)
		}
		if f.got != nil {
			t.Errorf("%s: reached the backend", c.name)
		}
	}
}

func TestEditBodyLimits(t *testing.T) {
	f := &fake{final: succeeded()}
	img := pngBytes(t, opaque(64, 64))
	body, ct := multipartBody(t, []part{{"image", "a.png", img}, {"prompt", "", []byte("x")}})
	// a body over the limit is 413, whichever part crosses it
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/v1/images/edits", bytes.NewReader(body))
	r.Header.Set("Content-Type", ct)
	New(f, int64(len(img)/2), time.Minute).Edits(w, r, auth.Principal{Tenant: "acme"})
	var e ErrorBody
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || w.Code != http.StatusRequestEntityTooLarge || *e.Error.Code != apierr.CodeTooLarge {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	// JSON is not accepted here
	w = httptest.NewRecorder()
	r = httptest.NewRequest(http.MethodPost, "/v1/images/edits", strings.NewReader(`{"prompt":"x"}`))
	r.Header.Set("Content-Type", "application/json")
	New(f, 1<<20, time.Minute).Edits(w, r, auth.Principal{Tenant: "acme"})
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "multipart/form-data") {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if f.got != nil {
		t.Fatal("a refused request reached the backend")
	}
}

// TestFormFieldsAreTheRequestTypes keeps the accepted form fields and the
// documented request types (EditRequest, VariationRequest) the same.
func TestFormFieldsAreTheRequestTypes(t *testing.T) {
	for _, c := range []struct {
		v     any
		files []string
		text  []string
	}{{EditRequest{}, []string{"image", "mask"}, editText}, {VariationRequest{}, []string{"image"}, variationText}} {
		want := map[string]bool{}
		for _, n := range append(append([]string{}, c.files...), c.text...) {
			want[n] = true
		}
		rt := reflect.TypeOf(c.v)
		for i := 0; i < rt.NumField(); i++ {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			if !want[name] {
				t.Errorf("%s.%s (%s) is not read from the form", rt.Name(), rt.Field(i).Name, name)
			}
			delete(want, name)
		}
		for n := range want {
			t.Errorf("%s: form field %s has no struct field", rt.Name(), n)
		}
	}
}
