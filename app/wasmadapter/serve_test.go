package wasmadapter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/app"
	"github.com/kiln-project/kiln/internal/fixtures"
	"github.com/kiln-project/kiln/internal/guestbuild"
	wb "github.com/kiln-project/kiln/internal/wasmbuild"
	"github.com/kiln-project/kiln/server/config"
)

// firstJob is a hand-assembled batching policy that always dispatches job 0.
func firstJob() []byte { return wb.FirstJob() }

// TestServeWithWasm runs kiln serve with the fixture model and drives the
// Wasm features over HTTP: a tenant node upload, a job whose pre- and
// post-processing chains run (built-in and uploaded nodes), a node's
// rejection, an operator policy upload, and the metrics.
func TestServeWithWasm(t *testing.T) {
	model := fixtures.Require(t, "sd15-tiny/model")
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.Models = map[string]string{"tiny": model}
	cfg.ShutdownTimeout = config.Duration(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	in, err := app.Start(ctx, app.Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Stop(context.Background())
	base := "http://" + in.Addr()
	do := func(method, path string, body []byte) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	shout := guestbuild.New(t.TempDir()).Build(t, "github.com/kiln-project/kiln/nodes-wasm/examples/shout")
	if code, body := do("PUT", "/v1/nodes/shout", shout); code != 201 {
		t.Fatalf("node upload: %d %s", code, body)
	}
	job := `{"prompt":"a red boat","width":64,"height":64,"steps":2,"guidance":5,"sampler":"euler","seed":7,
		"nodes":{"pre":[{"name":"shout"},{"name":"style","params":{"preset":"photo"}}],
		         "post":[{"name":"resize","params":{"width":"32"}},{"name":"grayscale"}]}}`
	code, body := do("POST", "/v1/jobs", []byte(job))
	if code != 202 {
		t.Fatalf("submit: %d %s", code, body)
	}
	var j struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Params struct {
			Prompt string `json:"prompt"`
		} `json:"params"`
		Images []struct {
			ID    string `json:"id"`
			Width int    `json:"width"`
		} `json:"images"`
		Error any `json:"error"`
	}
	_ = json.Unmarshal(body, &j)
	for deadline := time.Now().Add(90 * time.Second); ; {
		_, body = do("GET", "/v1/jobs/"+j.ID, nil)
		_ = json.Unmarshal(body, &j)
		if j.Status == "succeeded" || j.Status == "failed" || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if j.Status != "succeeded" || len(j.Images) != 1 || j.Images[0].Width != 32 {
		t.Fatalf("job: %s", body)
	}
	if !strings.HasPrefix(j.Params.Prompt, "A RED BOAT, photograph") {
		t.Fatalf("pre-processed prompt %q", j.Params.Prompt)
	}
	code, body = do("GET", "/v1/images/"+j.Images[0].ID, nil)
	img, err := png.Decode(bytes.NewReader(body))
	if code != 200 || err != nil || img.Bounds() != image.Rect(0, 0, 32, 32) {
		t.Fatalf("image: %d %v", code, err)
	}
	r, g, b, _ := img.At(16, 16).RGBA()
	if r != g || g != b {
		t.Fatalf("post-processed pixel not grey: %d %d %d", r, g, b)
	}

	code, body = do("POST", "/v1/jobs", []byte(`{"prompt":"forbidden words","nodes":{"pre":[{"name":"blocklist","params":{"words":"forbidden"}}]}}`))
	if code != 422 || !bytes.Contains(body, []byte("rejected_by_node")) {
		t.Fatalf("blocked job: %d %s", code, body)
	}
	code, body = do("POST", "/v1/jobs", []byte(`{"prompt":"x","nodes":{"post":[{"name":"nope"}]}}`))
	if code != 400 || !bytes.Contains(body, []byte(`"field":"nodes"`)) {
		t.Fatalf("unknown node: %d %s", code, body)
	}

	// Adaptive quality is opt-in: nothing asked the quality policy yet.
	if _, body := do("GET", "/metrics", nil); bytes.Contains(body, []byte(`hook="quality"`)) {
		t.Fatal("the quality policy ran for a request that did not opt in")
	}
	// A profile that opts in sends its requests through the quality
	// policy's Wasm module (explicit parameters stay as requested).
	adaptive := config.Profile{Name: "adaptive_tiny", Sampler: "euler", Steps: 2, Guidance: 5, Width: 64, Height: 64, MaxPixels: 1 << 16,
		MaxSteps: 4, MaxN: 1, MaxBatch: 1, Precision: "fp32", LatencyTarget: config.Duration(time.Second), Quality: "adaptive"}
	if err := in.Tenants().PutProfile(ctx, adaptive); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		code, body = do("POST", "/v1/jobs", []byte(`{"prompt":"a blue cup","profile":"adaptive_tiny","steps":2}`))
		if code == 202 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job of the adaptive profile: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if bytes.Contains(body, []byte(`"adjustments"`)) {
		t.Fatalf("an explicit parameter was adjusted: %s", body)
	}

	// The keyless local principal is the operator. (A hand-assembled
	// policy: its dry run is instant even on a loaded test machine.)
	if code, body := do("PUT", "/v1/policies/batching/fair?mode=shadow", firstJob()); code != 201 {
		t.Fatalf("policy upload: %d %s", code, body)
	}
	if code, body := do("GET", "/v1/policies/batching", nil); code != 200 || !bytes.Contains(body, []byte(`"candidate":{"name":"fair","version":1}`)) {
		t.Fatalf("policy slot: %d %s", code, body)
	}
	_, body = do("GET", "/metrics", nil)
	for _, want := range []string{
		`kiln_wasm_calls_total{module="builtin",hook="batching",result="ok"}`,
		`kiln_wasm_calls_total{module="builtin-nodes",hook="node_post",result="ok"} 2`,
		`/node/m-`, `@v1",hook="node_pre",result="ok"} 1`,
		`kiln_wasm_call_duration_seconds_bucket{module="builtin",hook="quality",le="+Inf"}`,
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Fatalf("metrics lack %s", want)
		}
	}
	if bytes.Contains(body, []byte(`module="local/`)) || bytes.Contains(body, []byte("shout")) {
		t.Fatal("metrics name the tenant or the name of a module")
	}
}
