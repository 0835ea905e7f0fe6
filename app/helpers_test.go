package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/app"
	"github.com/kiln-project/kiln/internal/fixtures"
	"github.com/kiln-project/kiln/server/config"
)

// server is a kiln serve instance running in the test process with the
// fixture model.
type server struct {
	t    *testing.T
	in   *app.Instance
	base string
	cfg  *config.Config
}

func testConfig(t testing.TB) *config.Config {
	t.Helper()
	model := fixtures.Require(t, "sd15-tiny/model")
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.Models = map[string]string{"tiny": model}
	cfg.BuiltinModel = false // these tests are about the fixture model; builtin_test.go covers the built-in one
	cfg.MetricsInterval = config.Duration(200 * time.Millisecond)
	cfg.ShutdownTimeout = config.Duration(5 * time.Second)
	return cfg
}

func logger(t *testing.T) *slog.Logger {
	if os.Getenv("KILN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func startServer(t *testing.T, mod func(*config.Config)) *server {
	t.Helper()
	return startServerLog(t, mod, logger(t))
}

// startServerLog starts a server that logs to lg.
func startServerLog(t *testing.T, mod func(*config.Config), lg *slog.Logger) *server {
	t.Helper()
	return startServerOpts(t, mod, app.Options{Logger: lg})
}

// startServerOpts starts a server with options (Config and, when nil,
// Logger are filled in).
func startServerOpts(t *testing.T, mod func(*config.Config), o app.Options) *server {
	t.Helper()
	if o.Logger == nil {
		o.Logger = logger(t)
	}
	cfg := testConfig(t)
	if mod != nil {
		mod(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o.Config = cfg
	in, err := app.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Stop(context.Background()) })
	return &server{t: t, in: in, base: "http://" + in.Addr(), cfg: cfg}
}

// response is a decoded HTTP response.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not JSON (%d): %s", r.status, r.body)
	}
	return m
}

// errField returns error.code and error.field of an error response.
func (r response) errField(t *testing.T) (code, field string) {
	m := r.json(t)
	e, _ := m["error"].(map[string]any)
	if e == nil {
		t.Fatalf("no error object in %s", r.body)
	}
	code, _ = e["code"].(string)
	field, _ = e["field"].(string)
	return code, field
}

func (s *server) do(method, path, key string, body any) response {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// submit posts a job and returns its id.
func (s *server) submit(key string, body map[string]any) string {
	s.t.Helper()
	r := s.do("POST", "/v1/jobs", key, body)
	if r.status != http.StatusAccepted {
		s.t.Fatalf("submit: %d %s", r.status, r.body)
	}
	return r.json(s.t)["id"].(string)
}

// waitJob polls a job until its status is one of want.
func (s *server) waitJob(key, id string, want ...string) map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		r := s.do("GET", "/v1/jobs/"+id, key, nil)
		if r.status == http.StatusOK {
			m := r.json(s.t)
			for _, w := range want {
				if m["status"] == w {
					return m
				}
			}
			if time.Now().After(deadline) {
				s.t.Fatalf("job %s is %v, want %v", id, m["status"], want)
			}
		} else if time.Now().After(deadline) {
			s.t.Fatalf("job %s: %d %s", id, r.status, r.body)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// tenant creates a tenant with the given quota tweaks and returns its key
// once the gateway accepts it.
func (s *server) tenant(id string, mod func(*config.Quota)) string {
	s.t.Helper()
	q := s.cfg.DefaultQuota
	q.MaxPixels = 1 << 20
	if mod != nil {
		mod(&q)
	}
	_, key, err := s.in.Tenants().Create(context.Background(), id, q)
	if err != nil {
		s.t.Fatal(err)
	}
	// Until the gateway mirrors the key, a keyless server answers it as
	// the local tenant: wait for the tenant itself.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := s.do("GET", "/v1/account", key, nil)
		if r.status == http.StatusOK && r.json(s.t)["tenant"] == id {
			break
		}
		if time.Now().After(deadline) {
			s.t.Fatal("tenant key never accepted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return key
}

// tinyJob is a fast job on the fixture model.
func tinyJob(prompt string) map[string]any {
	return map[string]any{"prompt": prompt, "width": 64, "height": 64, "steps": 3, "guidance": 5, "sampler": "euler"}
}
