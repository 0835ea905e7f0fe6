package app_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/png"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/app"
	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/gateway/api"
	"github.com/kiln-project/kiln/gateway/openai"
	"github.com/kiln-project/kiln/gateway/validate"
	"github.com/kiln-project/kiln/server/config"
)

func TestJobLifecycleAndImages(t *testing.T) {
	s := startServer(t, nil)
	body := tinyJob("a lighthouse at dusk")
	body["negative_prompt"] = "blurry"
	body["n"] = 2
	body["seed"] = 1234
	r := s.do("POST", "/v1/jobs", "", body)
	if r.status != http.StatusAccepted {
		t.Fatalf("POST /v1/jobs: %d %s", r.status, r.body)
	}
	m := r.json(t)
	id := m["id"].(string)
	if _, ok := m["position"].(float64); !ok || m["status"] != "queued" || r.header.Get("Location") != "/v1/jobs/"+id {
		t.Fatalf("202 body %s, Location %q", r.body, r.header.Get("Location"))
	}
	done := s.waitJob("", id, "succeeded", "failed")
	if done["status"] != "succeeded" {
		t.Fatalf("job: %v", done)
	}
	imgs := done["images"].([]any)
	if len(imgs) != 2 {
		t.Fatalf("images %v", imgs)
	}
	first := imgs[0].(map[string]any)
	if first["seed"].(float64) != 1234 || imgs[1].(map[string]any)["seed"].(float64) != 1235 {
		t.Fatalf("seeds %v", imgs)
	}
	ir := s.do("GET", first["url"].(string), "", nil)
	if ir.status != http.StatusOK || ir.header.Get("Content-Type") != "image/png" {
		t.Fatalf("image: %d %s", ir.status, ir.header.Get("Content-Type"))
	}
	img, err := png.Decode(bytes.NewReader(ir.body))
	if err != nil || img.Bounds().Dx() != 64 {
		t.Fatalf("png: %v", err)
	}
	txt, err := imageio.ReadParameters(bytes.NewReader(ir.body))
	if err != nil {
		t.Fatal(err)
	}
	want := "a lighthouse at dusk\nNegative prompt: blurry\nSteps: 3, Sampler: Euler, Schedule type: Automatic, CFG scale: 5, Seed: 1234, Size: 64x64, Model hash: "
	if !strings.HasPrefix(txt, want) {
		t.Fatalf("parameters chunk %q, want prefix %q", txt, want)
	}

	// Listing: newest first, paginated, filtered by status.
	id2 := s.submit("", tinyJob("second"))
	s.waitJob("", id2, "succeeded")
	l := s.do("GET", "/v1/jobs?limit=1", "", nil).json(t)
	page := l["jobs"].([]any)
	if len(page) != 1 || page[0].(map[string]any)["id"] != id2 || l["next_cursor"] != id2 {
		t.Fatalf("page 1: %s", s.do("GET", "/v1/jobs?limit=1", "", nil).body)
	}
	l = s.do("GET", "/v1/jobs?limit=1&cursor="+id2, "", nil).json(t)
	if page = l["jobs"].([]any); len(page) != 1 || page[0].(map[string]any)["id"] != id || l["next_cursor"] != nil {
		t.Fatalf("page 2: %v", l)
	}
	if l := s.do("GET", "/v1/jobs?status=failed", "", nil).json(t); len(l["jobs"].([]any)) != 0 {
		t.Fatalf("failed jobs listed: %v", l)
	}
	if c, f := s.do("GET", "/v1/jobs?status=bogus", "", nil).errField(t); c != "invalid_request" || f != "status" {
		t.Fatalf("bad status filter: %s %s", c, f)
	}
	// Canceling a finished job is a conflict.
	if r := s.do("DELETE", "/v1/jobs/"+id, "", nil); r.status != http.StatusConflict {
		t.Fatalf("cancel finished: %d %s", r.status, r.body)
	}
}

func TestImageToImage(t *testing.T) {
	s := startServer(t, nil)
	src := image.NewRGBA(image.Rect(0, 0, 72, 64))
	for i := range src.Pix {
		src.Pix[i] = uint8(i * 7)
	}
	var buf bytes.Buffer
	png.Encode(&buf, src)
	body := map[string]any{"prompt": "a painting", "steps": 4, "strength": 0.5, "guidance": 5,
		"init_image": "data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes())}
	id := s.submit("", body)
	done := s.waitJob("", id, "succeeded", "failed")
	if done["status"] != "succeeded" {
		t.Fatalf("img2img: %v", done)
	}
	p := done["params"].(map[string]any)
	if p["init_image"] != true || p["width"].(float64) != 72 || p["height"].(float64) != 64 || p["strength"].(float64) != 0.5 {
		t.Fatalf("params %v", p)
	}
	// Bad init images are 400s naming the field.
	for name, bad := range map[string]string{
		"not base64": "%%%",
		"not image":  base64.StdEncoding.EncodeToString([]byte("hello")),
		"truncated":  base64.StdEncoding.EncodeToString(buf.Bytes()[:60]),
	} {
		r := s.do("POST", "/v1/jobs", "", map[string]any{"prompt": "x", "init_image": bad})
		if c, f := r.errField(t); r.status != 400 || f != "init_image" {
			t.Errorf("%s: %d %s %s", name, r.status, c, f)
		}
	}
	big := image.NewGray(image.Rect(0, 0, 4096, 1100)) // 4.5 Mpx > max_image_pixels
	buf.Reset()
	png.Encode(&buf, big)
	r := s.do("POST", "/v1/jobs", "", map[string]any{"prompt": "x", "init_image": base64.StdEncoding.EncodeToString(buf.Bytes())})
	if c, f := r.errField(t); r.status != 400 || c != "limit_exceeded" || f != "init_image" {
		t.Fatalf("oversized init image: %d %s", r.status, r.body)
	}
	if c, f := s.do("POST", "/v1/jobs", "", map[string]any{"prompt": "x", "strength": 0.5}).errField(t); c != "invalid_request" || f != "strength" {
		t.Fatalf("strength without init image: %s %s", c, f)
	}
}

func TestValidationErrors(t *testing.T) {
	s := startServer(t, func(c *config.Config) { c.MaxBodyBytes = 4096 })
	cases := []struct {
		body          string
		status        int
		code, field   string
		messageSubstr string
	}{
		{`{"prompt":"x","widht":64}`, 400, "unknown_field", "widht", "widht"},
		{`{"prompt":"x","steps":"many"}`, 400, "invalid_request", "steps", "integer"},
		{`{"prompt":""}`, 400, "invalid_request", "prompt", "required"},
		{`{"prompt":"x","width":65}`, 400, "invalid_request", "width", "multiple of 8"},
		{`{"prompt":"x","width":2048,"height":2048}`, 400, "limit_exceeded", "width", "max_pixels"},
		{`{"prompt":"x","steps":151}`, 400, "limit_exceeded", "steps", "max_steps=150"},
		{`{"prompt":"x","n":9}`, 400, "limit_exceeded", "n", "max_n"},
		{`{"prompt":"x","profile":"speed_first","steps":40}`, 400, "limit_exceeded", "steps", "speed_first"},
		{`{"prompt":"x","sampler":"warp"}`, 400, "invalid_request", "sampler", "euler"},
		{`{"prompt":"x","model":"nope"}`, 400, "model_not_found", "model", "nope"},
		{`{"prompt":"x","profile":"turbo"}`, 400, "invalid_request", "profile", "balanced"},
		{`{"prompt":"x","guidance":-1}`, 400, "invalid_request", "guidance", ""},
		{`{"prompt":"x","priority":"urgent"}`, 400, "invalid_request", "priority", ""},
		{`{"prompt":"x","seed":9007199254740992}`, 400, "invalid_request", "seed", ""},
		{`{"prompt":"x"} trailing`, 400, "invalid_request", "", ""},
		{`{"prompt":"` + strings.Repeat("a", 5000) + `"}`, 413, "body_too_large", "", ""},
	}
	for _, c := range cases {
		r := s.do("POST", "/v1/jobs", "", c.body)
		code, field := r.errField(t)
		msg := r.json(t)["error"].(map[string]any)["message"].(string)
		if r.status != c.status || code != c.code || field != c.field || !strings.Contains(msg, c.messageSubstr) {
			t.Errorf("%.50s: got %d %s %q %q; want %d %s %q %q", c.body, r.status, code, field, msg, c.status, c.code, c.field, c.messageSubstr)
		}
	}
	// Unknown routes and methods use the same error shape.
	if c, _ := s.do("GET", "/v1/nothing", "", nil).errField(t); c != "not_found" {
		t.Fatalf("unknown route code %q", c)
	}
	if r := s.do("PUT", "/v1/jobs", "", nil); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("PUT /v1/jobs: %d", r.status)
	}
	if r := s.do("GET", "/v1/jobs/01m80xk54x7k4xb7aswca8e1pg", "", nil); r.status != 404 {
		t.Fatalf("missing job: %d", r.status)
	}
}

func TestModelsProfilesSamplersAccountStatus(t *testing.T) {
	s := startServer(t, nil)
	m := s.do("GET", "/v1/models", "", nil).json(t)
	data := m["data"].([]any)
	if len(data) != 1 || data[0].(map[string]any)["id"] != "tiny" || data[0].(map[string]any)["default"] != true {
		t.Fatalf("models %v", m)
	}
	p := s.do("GET", "/v1/profiles", "", nil).json(t)
	if p["default"] != "balanced" || len(p["data"].([]any)) != 3 {
		t.Fatalf("profiles %v", p)
	}
	sm := s.do("GET", "/v1/samplers", "", nil).json(t)
	found := false
	for _, x := range sm["data"].([]any) {
		if x.(map[string]any)["id"] == "euler_a" && x.(map[string]any)["label"] == "Euler a" {
			found = true
		}
	}
	if !found {
		t.Fatalf("samplers %v", sm)
	}
	a := s.do("GET", "/v1/account", "", nil).json(t)
	if a["tenant"] != "local" || a["keyless"] != true || a["quota"].(map[string]any)["max_steps"].(float64) != 150 {
		t.Fatalf("account %v", a)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := s.do("GET", "/v1/status", "", nil).json(t)
		if w, _ := st["workers"].([]any); len(w) == 1 && w[0].(map[string]any)["device"] == "cpu" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never listed the worker: %v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := s.do("GET", "/healthz", "", nil); r.status != 200 {
		t.Fatalf("healthz %d", r.status)
	}
	if r := s.do("GET", "/readyz", "", nil); r.status != 200 {
		t.Fatalf("readyz %d %s", r.status, r.body)
	}
}

func TestMetricsAndPlanCache(t *testing.T) {
	s := startServer(t, nil)
	for i := 0; i < 3; i++ {
		id := s.submit("", tinyJob("same shape"))
		s.waitJob("", id, "succeeded")
	}
	deadline := time.Now().Add(20 * time.Second)
	var text string
	for {
		text = string(s.do("GET", "/metrics", "", nil).body)
		if strings.Contains(text, `kiln_cache_hits_total{cache="plan"} 2`) && strings.Contains(text, `kiln_images_generated_total 3`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed 2 plan-cache hits and 3 images:\n%s", text)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{
		`# TYPE kiln_http_requests_total counter`,
		`kiln_http_requests_total{route="/v1/jobs",method="POST",code="202"} 3`,
		`kiln_jobs_submitted_total{source="api"} 3`,
		`kiln_jobs_finished_total{status="succeeded"} 3`,
		`kiln_cache_hit_ratio{cache="plan"} 0.666`,
		`kiln_cache_hit_ratio{cache="text_encoder"}`,
		`# TYPE kiln_job_duration_seconds histogram`,
		`kiln_step_duration_seconds_count 9`,
		`kiln_queue_wait_seconds_count 3`,
		`kiln_model_loads_total{worker=`,
		`kiln_queue_depth `,
		`go_goroutines `,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestOpenAPIDocumentCoversRoutes(t *testing.T) {
	s := startServer(t, nil)
	r := s.do("GET", "/v1/openapi.json", "", nil)
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	// Every route the server has is documented, and nothing else — the
	// routes the Wasm hooks mount included.
	want := map[string]bool{}
	for _, rt := range s.in.Routes() {
		want[strings.ToLower(rt.Method)+" "+rt.Path] = true
	}
	for _, k := range []string{"post /v1/jobs", "get /v1/images/{id}", "put /v1/policies/{hook}/{name}",
		"post /v1/policies/{hook}/{name}/shadow", "delete /v1/policies/{hook}/shadow", "put /v1/nodes/{name}", "get /v1/nodes"} {
		if !want[k] {
			t.Errorf("the server has no route %s", k)
		}
	}
	got := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			got[method+" "+path] = true
		}
	}
	for k := range want {
		if !got[k] {
			t.Errorf("route %s is not in openapi.json", k)
		}
	}
	for k := range got {
		if !want[k] {
			t.Errorf("openapi.json documents %s, which the server does not have", k)
		}
	}
	// Every {param} of a path is declared as a path parameter of each of
	// its operations (or of the path).
	type param struct{ Name, In string }
	for path, ops := range doc.Paths {
		var shared []param
		if raw, ok := ops["parameters"]; ok {
			data, _ := json.Marshal(raw)
			json.Unmarshal(data, &shared)
		}
		for method, op := range ops {
			if method == "parameters" {
				continue
			}
			var o struct{ Parameters []param }
			data, _ := json.Marshal(op)
			json.Unmarshal(data, &o)
			declared := map[string]bool{}
			for _, p := range append(shared, o.Parameters...) {
				if p.In == "path" {
					declared[p.Name] = true
				}
			}
			for _, seg := range strings.Split(path, "/") {
				if strings.HasPrefix(seg, "{") && !declared[strings.Trim(seg, "{}")] {
					t.Errorf("%s %s: path parameter %s is not declared", method, path, seg)
				}
			}
		}
	}
}

func TestNonLoopbackNeedsTenant(t *testing.T) {
	cfg := testConfig(t)
	cfg.Listen = "0.0.0.0:0"
	_, err := app.Start(context.Background(), app.Options{Config: cfg, Logger: logger(t)})
	if err == nil || !strings.Contains(err.Error(), "without any tenant") {
		t.Fatalf("non-loopback start without tenants: %v", err)
	}
	// With a tenant it starts, and keyless requests are refused.
	s := startServer(t, func(c *config.Config) { c.DataDir = cfg.DataDir })
	key := s.tenant("acme", nil)
	s.in.Stop(context.Background())
	s2 := startServer(t, func(c *config.Config) { c.DataDir = cfg.DataDir; c.Listen = "0.0.0.0:0" })
	if r := s2.do("GET", "/v1/models", "", nil); r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") == "" {
		t.Fatalf("keyless on 0.0.0.0: %d", r.status)
	}
	if r := s2.do("GET", "/v1/models", key, nil); r.status != http.StatusOK {
		t.Fatalf("keyed on 0.0.0.0: %d %s", r.status, r.body)
	}
}

// TestOpenAPISchemasMatchRequestTypes keeps the documented request bodies
// in step with the structs the server decodes strictly.
func TestOpenAPISchemasMatchRequestTypes(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]any `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	for schema, v := range map[string]any{"JobRequest": validate.JobRequest{}, "OpenAIImageRequest": openai.GenerationRequest{},
		"OpenAIImageEditRequest": openai.EditRequest{}, "OpenAIImageVariationRequest": openai.VariationRequest{}} {
		want := map[string]bool{}
		rt := reflect.TypeOf(v)
		for i := 0; i < rt.NumField(); i++ {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			if name == "-" {
				continue // not part of the wire format
			}
			want[name] = true
		}
		got := doc.Components.Schemas[schema].Properties
		for name := range want {
			if _, ok := got[name]; !ok {
				t.Errorf("%s: field %q is not documented", schema, name)
			}
		}
		for name := range got {
			if !want[name] {
				t.Errorf("%s: documented field %q is not accepted", schema, name)
			}
		}
	}
}

func TestPprofOnlyOnAdminListener(t *testing.T) {
	s := startServer(t, func(c *config.Config) { c.AdminListen = "127.0.0.1:0" })
	resp, err := http.Get("http://" + s.in.AdminAddr() + "/debug/pprof/")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("admin pprof: %v %v", err, resp)
	}
	resp.Body.Close()
	if r := s.do("GET", "/debug/pprof/", "", nil); r.status != http.StatusNotFound {
		t.Fatalf("pprof on the API listener: %d", r.status)
	}
	off := startServer(t, nil)
	if off.in.AdminAddr() != "" {
		t.Fatal("admin listener without admin_listen")
	}
}

func TestCORS(t *testing.T) {
	s := startServer(t, func(c *config.Config) { c.CORSOrigins = []string{"https://app.example"} })
	req, _ := http.NewRequest("OPTIONS", s.base+"/v1/jobs", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers")), "authorization") {
		t.Fatalf("preflight headers %v", resp.Header)
	}
	req.Header.Set("Origin", "https://other.example")
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("unlisted origin allowed")
	}
	// Off by default.
	d := startServer(t, nil)
	req, _ = http.NewRequest("GET", d.base+"/v1/models", nil)
	req.Header.Set("Origin", "https://app.example")
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS on by default")
	}
}
