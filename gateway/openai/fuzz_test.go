package openai

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/gateway/validate"
	"github.com/kiln-project/kiln/server/jobs"
)

// refusingBackend records what reaches Submit and refuses it.
type refusingBackend struct{ got *validate.JobRequest }

func (b *refusingBackend) Submit(_ context.Context, _ auth.Principal, r *validate.JobRequest, _ string) (*jobs.Job, *apierr.Error) {
	b.got = r
	return nil, apierr.Invalid("prompt", "refused by the test backend")
}
func (b *refusingBackend) Wait(context.Context, string, string) (*jobs.Job, error) { return nil, nil }
func (b *refusingBackend) Cancel(context.Context, string, string)                  {}
func (b *refusingBackend) Image(context.Context, string, string) ([]byte, error)   { return nil, nil }
func (b *refusingBackend) ImageURL(*http.Request, string, string) string           { return "" }
func (b *refusingBackend) HasProfile(string) bool                                  { return true }
func (b *refusingBackend) DecodeImage(ctx context.Context, field string, data []byte) (image.Image, *apierr.Error) {
	return testDecode(ctx, field, data)
}

// FuzzGenerations: any request body is answered with a 4xx in OpenAI's
// error shape (the backend refuses whatever reaches it), and what reaches
// the backend has n within 1..10 and a positive size.
func FuzzGenerations(f *testing.F) {
	for _, s := range []string{`{"prompt":"x","size":"64x64","n":2,"response_format":"b64_json"}`, `{"prompt":"x","size":"99999999999999999999x1"}`,
		`{"prompt":"x","quality":"hd","style":"vivid","user":"u"}`, `{`, `{"prompt":"x","n":0}`, "{\"prompt\":\"\xff\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		b := &refusingBackend{}
		h := New(b, 1<<16, 0)
		w := httptest.NewRecorder()
		h.Generations(w, httptest.NewRequest("POST", "/v1/images/generations", bytes.NewReader(body)), auth.Principal{Tenant: "t"})
		if w.Code < 400 || w.Code > 499 {
			t.Fatalf("status %d for %q", w.Code, body)
		}
		var e ErrorBody
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
			t.Fatalf("error body %s", w.Body.Bytes())
		}
		if r := b.got; r != nil {
			if r.N != nil && (*r.N < 1 || *r.N > 10) {
				t.Fatalf("n=%d reached the backend", *r.N)
			}
			if r.Width != nil && (*r.Width <= 0 || *r.Height <= 0) {
				t.Fatalf("size %dx%d reached the backend", *r.Width, *r.Height)
			}
		}
	})
}

// FuzzEdits: any multipart body (with a fixed boundary) is answered with a
// 4xx in OpenAI's error shape, and what reaches the backend has an init
// image and, when it has a mask, a mask that is a PNG.
func FuzzEdits(f *testing.F) {
	img := pngBytes(f, opaque(8, 8))
	mask := pngBytes(f, holed(8, 8))
	for _, parts := range [][]part{
		{{"image[]", "a.png", img}, {"mask", "m.png", mask}, {"prompt", "", []byte("a cat")}, {"n", "", []byte("2")}},
		{{"image", "a.png", img}, {"prompt", "", []byte("x")}, {"size", "", []byte("64x64")}},
		{{"image", "a.png", []byte("not a png")}, {"prompt", "", []byte("x")}},
		{{"prompt", "", []byte("x")}, {"stream", "", []byte("true")}},
	} {
		body, _ := multipartBody(f, parts)
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		b := &refusingBackend{}
		h := New(b, 1<<16, 0)
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/v1/images/edits", bytes.NewReader(body))
		r.Header.Set("Content-Type", "multipart/form-data; boundary="+testBoundary)
		h.Edits(w, r, auth.Principal{Tenant: "t"})
		if w.Code < 400 || w.Code > 499 {
			t.Fatalf("status %d", w.Code)
		}
		var e ErrorBody
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
			t.Fatalf("error body %s", w.Body.Bytes())
		}
		if r := b.got; r != nil {
			if r.InitImage == "" {
				t.Fatal("an edit without an init image reached the backend")
			}
			if r.Mask != "" {
				data, err := base64.StdEncoding.DecodeString(r.Mask)
				if err != nil || !bytes.HasPrefix(data, []byte("\x89PNG")) {
					t.Fatalf("mask %q is not a base64 PNG", r.Mask)
				}
			}
		}
	})
}
