package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"net/http"
	"testing"
	"time"

	"github.com/kiln-project/kiln/app"
	"github.com/kiln-project/kiln/gateway/api"
	"github.com/kiln-project/kiln/internal/fixtures"
	"github.com/kiln-project/kiln/server/config"
)

// startDefault starts a server with the embedded default configuration,
// changed only where a test must (a temporary data directory, a free port)
// and by mod; the built-in model is extracted to a temporary user cache.
func startDefault(t *testing.T, mod func(*config.Config)) *server {
	t.Helper()
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	if mod != nil {
		mod(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	in, err := app.Start(ctx, app.Options{Config: cfg, Logger: logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Stop(context.Background()) })
	return &server{t: t, in: in, base: "http://" + in.Addr(), cfg: cfg}
}

// modelsByID returns GET /v1/models keyed by id.
func (s *server) modelsByID() map[string]map[string]any {
	s.t.Helper()
	r := s.do("GET", "/v1/models", "", nil)
	if r.status != http.StatusOK {
		s.t.Fatalf("GET /v1/models: %d %s", r.status, r.body)
	}
	out := map[string]map[string]any{}
	for _, m := range r.json(s.t)["data"].([]any) {
		mm := m.(map[string]any)
		out[mm["id"].(string)] = mm
	}
	return out
}

// TestBuiltinModelServedByDefault starts the server as `kiln serve` with no
// flags would: the built-in model is listed as the default and a job that
// names no model runs on it.
func TestBuiltinModelServedByDefault(t *testing.T) {
	s := startDefault(t, nil)
	ms := s.modelsByID()
	m, ok := ms["kiln-shapes"]
	if !ok || len(ms) != 1 {
		t.Fatalf("models %v, want kiln-shapes", ms)
	}
	if m["default"] != true || m["builtin"] != true || m["format"] != "diffusers" {
		t.Fatalf("kiln-shapes %v: want the built-in default diffusers model", m)
	}
	if m["native_width"] != 128.0 || m["native_height"] != 128.0 || m["vae_factor"] != 8.0 {
		t.Fatalf("kiln-shapes %v: want native 128×128, VAE factor 8", m)
	}
	// A job with nothing but a prompt: the default model at its native
	// size (the profile says 512×512) with the profile's steps.
	id := s.submit("", map[string]any{"prompt": "a red circle on the left on a yellow background"})
	j := s.waitJob("", id, "succeeded", "failed")
	if j["status"] != "succeeded" {
		t.Fatalf("job %v", j)
	}
	p := j["params"].(map[string]any)
	if p["model"] != "kiln-shapes" || p["width"] != 128.0 || p["height"] != 128.0 {
		t.Fatalf("job params %v, want kiln-shapes at 128×128", p)
	}
	img := j["images"].([]any)[0].(map[string]any)
	r := s.do("GET", img["url"].(string), "", nil)
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "image/png" {
		t.Fatalf("image: %d %s", r.status, r.header.Get("Content-Type"))
	}
	im, err := png.Decode(bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if b := im.Bounds(); b.Dx() != 128 || b.Dy() != 128 {
		t.Fatalf("image is %v, want 128×128", b)
	}
}

// TestModelListIsDocumented: every field of GET /v1/models items is in the
// OpenAPI document's ModelList schema.
func TestModelListIsDocumented(t *testing.T) {
	s := startDefault(t, nil)
	var doc struct {
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	var list struct {
		Properties struct {
			Data struct {
				Items struct {
					Properties map[string]any `json:"properties"`
				} `json:"items"`
			} `json:"data"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(doc.Components.Schemas["ModelList"], &list); err != nil {
		t.Fatal(err)
	}
	documented := list.Properties.Data.Items.Properties
	for _, m := range s.modelsByID() {
		for k := range m {
			if _, ok := documented[k]; !ok {
				t.Errorf("GET /v1/models field %q is not in the ModelList schema", k)
			}
		}
	}
}

// TestBuiltinModelBesideConfiguredModels: the built-in model stays the
// default next to configured models unless default_model names another,
// and builtin_model: false leaves it out.
func TestBuiltinModelBesideConfiguredModels(t *testing.T) {
	tiny := fixtures.Require(t, "sd15-tiny/model")
	s := startDefault(t, func(c *config.Config) { c.Models = map[string]string{"tiny": tiny} })
	ms := s.modelsByID()
	if len(ms) != 2 || ms["kiln-shapes"]["default"] != true || ms["tiny"]["default"] != false || ms["tiny"]["builtin"] != false {
		t.Fatalf("models %v", ms)
	}
	// A job naming the fixture model runs on it.
	job := tinyJob("a named model")
	job["model"] = "tiny"
	j := s.waitJob("", s.submit("", job), "succeeded", "failed")
	if j["status"] != "succeeded" || j["params"].(map[string]any)["model"] != "tiny" {
		t.Fatalf("job %v", j)
	}
	s.in.Stop(context.Background())

	s = startDefault(t, func(c *config.Config) {
		c.Models = map[string]string{"tiny": tiny}
		c.DefaultModel = "tiny"
	})
	if ms := s.modelsByID(); len(ms) != 2 || ms["tiny"]["default"] != true || ms["kiln-shapes"]["default"] != false {
		t.Fatalf("with default_model tiny: %v", ms)
	}
	s.in.Stop(context.Background())

	s = startDefault(t, func(c *config.Config) {
		c.Models = map[string]string{"tiny": tiny}
		c.BuiltinModel = false
	})
	if ms := s.modelsByID(); len(ms) != 1 || ms["tiny"]["default"] != true {
		t.Fatalf("with builtin_model false: %v", ms)
	}
}
