package a1111

import (
	"bytes"
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/gateway/live"
	"github.com/kiln-project/kiln/gateway/validate"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/jobs"
)

// stubBackend serves one model and refuses every job.
type stubBackend struct{}

func (stubBackend) Submit(context.Context, auth.Principal, *validate.JobRequest, string) (*jobs.Job, *apierr.Error) {
	return nil, apierr.Invalid("prompt", "refused by the test backend")
}
func (stubBackend) Wait(context.Context, string, string) (*jobs.Job, error) { return nil, nil }
func (stubBackend) Cancel(context.Context, string, string)                  {}
func (stubBackend) Image(context.Context, string, string) ([]byte, error)   { return nil, nil }
func (stubBackend) Models() ([]catalog.Model, string) {
	return []catalog.Model{{Name: "tiny", Format: "diffusers"}}, "tiny"
}
func (stubBackend) ModelHash(context.Context, string) string { return "" }
func (stubBackend) Live(string, string) (live.State, bool)   { return live.State{}, false }
func (stubBackend) GPUs() []events.GPU                       { return nil }

// FuzzRequest: any txt2img or img2img body is decoded and translated into
// a native job request, or refused with a 4xx; never a panic.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{`{"prompt":"a cat","steps":3,"width":64,"height":64,"cfg_scale":7,"sampler_name":"Euler a","seed":-1}`,
		`{"prompt":"x","override_settings":{"sd_model_checkpoint":"tiny","CLIP_stop_at_last_layers":2}}`,
		`{"prompt":"x","init_images":["data:image/png;base64,AAAA"],"denoising_strength":0.5}`,
		`{"prompt":"x","batch_size":1000,"n_iter":1000}`, `{"styles":["a"]}`, `[]`} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	h := New(stubBackend{}, 1<<16, time.Second)
	p := auth.Principal{Tenant: "t"}
	f.Fuzz(func(t *testing.T, body []byte, img2img bool) {
		g, _, err := h.decodeRequest(httptest.NewRequest("POST", "/sdapi/v1/txt2img", bytes.NewReader(body)), img2img)
		if err != nil {
			if err.Status < 400 || err.Status > 499 {
				t.Fatalf("decode status %d", err.Status)
			}
			return
		}
		if _, err := h.jobRequest(g, p, img2img); err != nil && (err.Status < 400 || err.Status > 499) {
			t.Fatalf("translate status %d: %v", err.Status, err)
		}
	})
}
