package apierr

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

type req struct {
	Prompt string  `json:"prompt"`
	Width  *int    `json:"width"`
	Scale  float64 `json:"guidance"`
}

func TestDecodeStrict(t *testing.T) {
	cases := []struct {
		body, code, field string
		status            int
	}{
		{`{"prompt":"x","widht":5}`, CodeUnknownField, "widht", 400},
		{`{"prompt":"x","width":"big"}`, CodeInvalid, "width", 400},
		{`{"prompt":"x","width":1.5}`, CodeInvalid, "width", 400},
		{`{"prompt":3}`, CodeInvalid, "prompt", 400},
		{`[1,2]`, CodeInvalid, "", 400},
		{`{"prompt":"x"`, CodeInvalid, "", 400},
		{``, CodeInvalid, "", 400},
		{`{"prompt":"x"} {"prompt":"y"}`, CodeInvalid, "", 400},
		{`{"prompt":"` + strings.Repeat("a", 200) + `"}`, CodeTooLarge, "", 413},
	}
	for _, c := range cases {
		var r req
		err := DecodeStrict(strings.NewReader(c.body), 100, &r)
		if err == nil {
			t.Errorf("%s: accepted", c.body)
			continue
		}
		if err.Code != c.code || err.Field != c.field || err.Status != c.status {
			t.Errorf("%.40s: got %d %s field %q (%s), want %d %s field %q", c.body, err.Status, err.Code, err.Field, err.Message, c.status, c.code, c.field)
		}
	}
	var r req
	if err := DecodeStrict(strings.NewReader(`{"prompt":"ok","width":64}`), 100, &r); err != nil || *r.Width != 64 {
		t.Fatalf("valid body: %v", err)
	}
}

func TestWrite(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, TooMany(CodeRateLimited, 1500*time.Millisecond, "slow down"))
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "2" {
		t.Fatalf("status %d retry %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	if got := strings.TrimSpace(rec.Body.String()); got != `{"error":{"code":"rate_limited","message":"slow down"}}` {
		t.Fatalf("body %s", got)
	}
	rec = httptest.NewRecorder()
	Write(rec, Limit("steps", "steps 80 exceeds max_steps=50"))
	if got := strings.TrimSpace(rec.Body.String()); got != `{"error":{"code":"limit_exceeded","message":"steps 80 exceeds max_steps=50","field":"steps"}}` {
		t.Fatalf("body %s", got)
	}
}

func TestDecodeStrictRefusesInvalidUTF8(t *testing.T) {
	var v struct{ Prompt string }
	if err := DecodeStrict(strings.NewReader("{\"Prompt\":\"\xff\xfe\"}"), 1<<10, &v); err == nil || err.Status != 400 {
		t.Fatalf("invalid UTF-8: %v %q", err, v.Prompt)
	}
	if err := DecodeStrict(strings.NewReader(`{"Prompt":"héllo"}`), 1<<10, &v); err != nil || v.Prompt != "héllo" {
		t.Fatalf("valid UTF-8: %v", err)
	}
	if err := DecodeStrict(strings.NewReader(`{"Prompt":"`+strings.Repeat("x", 2000)+`"}`), 1<<10, &v); err == nil || err.Status != 413 {
		t.Fatalf("over the limit: %v", err)
	}
}
