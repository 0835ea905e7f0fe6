package validate

import (
	"bytes"
	"testing"

	"github.com/kiln-project/kiln/gateway/apierr"
)

// FuzzPlan: any POST /v1/jobs body is refused with a 4xx or planned into
// parameters within the tenant's quota and the server's limits.
func FuzzPlan(f *testing.F) {
	for _, s := range []string{`{"prompt":"x"}`, `{"prompt":"x","width":64,"height":64,"steps":3,"n":2,"sampler":"euler","seed":7}`,
		`{"prompt":"x","width":-8,"steps":1e9}`, `{"prompt":"x","strength":0.5,"guidance":30,"clip_skip":2,"priority":"low"}`,
		`{"prompt":"x","nodes":{"pre":[{"name":"style"}]}}`, `{"prompt":"","model":"alpha","profile":"speed_first"}`} {
		f.Add([]byte(s), false)
	}
	v, _, _ := setup(f)
	p := principal(1, 50)
	f.Fuzz(func(t *testing.T, body []byte, hasInit bool) {
		var r JobRequest
		if err := apierr.DecodeStrict(bytes.NewReader(body), 1<<16, &r); err != nil {
			if err.Status < 400 || err.Status > 499 {
				t.Fatalf("decode status %d", err.Status)
			}
			return
		}
		params, err := v.Plan(p, &r, hasInit)
		if err != nil {
			if err.Status < 400 || err.Status > 499 {
				t.Fatalf("plan status %d: %v", err.Status, err)
			}
			return
		}
		if params.Width < MinSide || params.Width > MaxSide || params.Height < MinSide || params.Height > MaxSide ||
			params.Width*params.Height > p.Quota.MaxPixels || params.Steps < 1 || params.Steps > p.Quota.MaxSteps ||
			params.N < 1 || params.N > p.Quota.MaxN || params.Prompt == "" {
			t.Fatalf("planned %+v from %s", params, body)
		}
	})
}
