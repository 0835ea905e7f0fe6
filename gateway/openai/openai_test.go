package openai

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/gateway/validate"
	"github.com/kiln-project/kiln/server/jobs"
)

// fake is a gateway whose jobs finish as final says (nil: never).
type fake struct {
	got      *validate.JobRequest
	final    *jobs.Job
	reject   *apierr.Error
	canceled string
}

func (f *fake) Submit(_ context.Context, p auth.Principal, r *validate.JobRequest, source string) (*jobs.Job, *apierr.Error) {
	if f.reject != nil {
		return nil, f.reject
	}
	f.got = r
	return &jobs.Job{ID: "job1", Tenant: p.Tenant, Status: jobs.StatusQueued}, nil
}

func (f *fake) Wait(ctx context.Context, tenant, id string) (*jobs.Job, error) {
	if f.final == nil {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return f.final, nil
}

func (f *fake) Cancel(_ context.Context, tenant, id string) { f.canceled = id }
func (f *fake) Image(_ context.Context, tenant, id string) ([]byte, error) {
	return []byte("png:" + id), nil
}
func (f *fake) ImageURL(_ *http.Request, tenant, id string) string { return "https://kiln/i/" + id }
func (f *fake) HasProfile(name string) bool                        { return name == "quality_first" }
func (f *fake) DecodeImage(ctx context.Context, field string, data []byte) (image.Image, *apierr.Error) {
	return testDecode(ctx, field, data)
}

func post(t *testing.T, h *Handler, body string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/v1/images/generations", strings.NewReader(body))
	h.Generations(w, r, auth.Principal{Tenant: "acme"})
	return w
}

func succeeded() *jobs.Job {
	return &jobs.Job{ID: "job1", Tenant: "acme", Status: jobs.StatusSucceeded, CreatedAt: time.Unix(1700000000, 0),
		Params: jobs.Params{Prompt: "a fox"},
		Images: []jobs.Image{{ID: "job1-0"}, {ID: "job1-1"}}}
}

func TestGenerationsMapsTheRequestAndAnswers(t *testing.T) {
	f := &fake{final: succeeded()}
	h := New(f, 1<<20, time.Minute)
	w := post(t, h, `{"prompt":"a fox","model":"dall-e-3","n":2,"size":"768x512","quality":"hd","response_format":"b64_json","seed":7}`)
	if w.Code != http.StatusOK || w.Header().Get(JobIDHeader) != "job1" {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	g := f.got
	if g.Model != "" || *g.N != 2 || *g.Width != 768 || *g.Height != 512 || g.Profile != "quality_first" || *g.Seed != 7 {
		t.Fatalf("job request %+v", g)
	}
	var resp Response
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Created != 1700000000 || len(resp.Data) != 2 || resp.Data[1].RevisedPrompt != "a fox" {
		t.Fatalf("response %+v", resp)
	}
	if png, _ := base64.StdEncoding.DecodeString(resp.Data[1].B64JSON); string(png) != "png:job1-1" {
		t.Fatalf("b64_json %q", resp.Data[1].B64JSON)
	}
	// url format and a Kiln model name passed through
	w = post(t, h, `{"prompt":"a fox","model":"tiny"}`)
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || resp.Data[0].URL != "https://kiln/i/job1-0" || f.got.Model != "tiny" {
		t.Fatalf("url response %s (model %q)", w.Body, f.got.Model)
	}
}

func TestErrorsHaveOpenAIsShape(t *testing.T) {
	h := New(&fake{final: succeeded()}, 1<<20, time.Minute)
	for body, param := range map[string]string{
		`{"prompt":"x","size":"big"}`:             "size",
		`{"prompt":"x","n":11}`:                   "n",
		`{"prompt":"x","quality":"ultra"}`:        "quality",
		`{"prompt":"x","response_format":"jpeg"}`: "response_format",
		`{"prompt":"x","output_format":"webp"}`:   "output_format",
		`{"prompt":"x","unknown_field":1}`:        "",
	} {
		w := post(t, h, body)
		var e ErrorBody
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || w.Code != http.StatusBadRequest || e.Error.Type != "invalid_request_error" {
			t.Fatalf("%s: %d %s", body, w.Code, w.Body)
		}
		if param != "" && (e.Error.Param == nil || *e.Error.Param != param) {
			t.Fatalf("%s: param %v, want %s", body, e.Error.Param, param)
		}
	}
	// a quota refusal keeps its Retry-After and becomes a rate_limit_error
	f := &fake{reject: apierr.TooMany(apierr.CodeConcurrency, 1500*time.Millisecond, "busy")}
	w := post(t, New(f, 1<<20, time.Minute), `{"prompt":"x"}`)
	var e ErrorBody
	json.Unmarshal(w.Body.Bytes(), &e)
	if w.Code != http.StatusTooManyRequests || e.Error.Type != "rate_limit_error" || w.Header().Get("Retry-After") != "2" {
		t.Fatalf("429: %d %v %q", w.Code, e, w.Header().Get("Retry-After"))
	}
}

func TestFailedAndSlowJobs(t *testing.T) {
	failed := succeeded()
	failed.Status, failed.Error = jobs.StatusFailed, &jobs.Error{Code: "engine", Message: "out of memory"}
	w := post(t, New(&fake{final: failed}, 1<<20, time.Minute), `{"prompt":"x"}`)
	if w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), "out of memory") {
		t.Fatalf("failed job: %d %s", w.Code, w.Body)
	}
	f := &fake{} // never finishes
	w = post(t, New(f, 1<<20, 10*time.Millisecond), `{"prompt":"x"}`)
	if w.Code != http.StatusGatewayTimeout || w.Header().Get("Location") != "/v1/jobs/job1" || f.canceled != "" {
		t.Fatalf("slow job: %d %q canceled %q", w.Code, w.Header().Get("Location"), f.canceled)
	}
}
