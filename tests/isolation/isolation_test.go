// Package isolation holds the tenant-isolation matrix: every route of
// /v1/openapi.json × every credential (none, malformed, another tenant's
// key, a revoked key, a tenant's key on operator-only routes), run against
// a real server. Routes added to the OpenAPI document are covered without
// touching this test; a route whose path parameters it cannot fill fails
// it, so that the matrix is extended rather than silently skipped.
package isolation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/app"
	"github.com/kiln-project/kiln/internal/fixtures"
	nodeswasm "github.com/kiln-project/kiln/nodes-wasm"
	"github.com/kiln-project/kiln/policies"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/jobs"
)

type client struct {
	t    *testing.T
	base string
}

type reply struct {
	status int
	body   []byte
}

// do sends a request with the given Authorization header value ("" sends
// none).
func (c *client) do(method, path, authz string, body []byte) reply {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
		if len(body) >= 4 && string(body[:4]) == "\x00asm" {
			req.Header.Set("Content-Type", "application/wasm")
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, data}
}

func bearer(key string) string { return "Bearer " + key }

// tenantA is what the victim tenant owns; none of it may leak.
type tenantA struct {
	key, jobID, imageID, prompt, node, policy, signedPath, promptID, lora string
}

// keyID is the id part of A's key (kiln_<id>_<secret>).
func (a tenantA) keyID() string {
	parts := strings.SplitN(a.key, "_", 3)
	if len(parts) < 2 {
		return "x"
	}
	return parts[1]
}

func setup(t *testing.T) (*client, *app.Instance, tenantA, map[string]string) {
	model := fixtures.Require(t, "sd15-tiny/model")
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.Models = map[string]string{"tiny": model}
	cfg.BuiltinModel = false
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	in, err := app.Start(ctx, app.Options{Config: cfg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Stop(context.Background()) })
	c := &client{t: t, base: "http://" + in.Addr()}
	keys := map[string]string{}
	q := cfg.DefaultQuota
	for _, id := range []string{"tenant-victim", "tenant-b", "tenant-c"} {
		_, key, err := in.Tenants().Create(ctx, id, q)
		if err != nil {
			t.Fatal(err)
		}
		keys[id] = key
	}
	for id, key := range keys {
		deadline := time.Now().Add(30 * time.Second)
		for c.do("GET", "/v1/account", bearer(key), nil).status != http.StatusOK {
			if time.Now().After(deadline) {
				t.Fatalf("key of %s never accepted", id)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	a := tenantA{key: keys["tenant-victim"], prompt: "secret-prompt-of-a", node: "a-private-node", policy: "a-private-policy", lora: "a-private-lora"}
	// A's job and image.
	job, _ := json.Marshal(map[string]any{"prompt": a.prompt, "width": 64, "height": 64, "steps": 2, "guidance": 5})
	r := c.do("POST", "/v1/jobs", bearer(a.key), job)
	if r.status != http.StatusAccepted {
		t.Fatalf("A's job: %d %s", r.status, r.body)
	}
	var j map[string]any
	json.Unmarshal(r.body, &j)
	a.jobID = j["id"].(string)
	deadline := time.Now().Add(120 * time.Second)
	for {
		r := c.do("GET", "/v1/jobs/"+a.jobID, bearer(a.key), nil)
		json.Unmarshal(r.body, &j)
		if j["status"] == "succeeded" {
			break
		}
		if time.Now().After(deadline) || j["status"] == "failed" {
			t.Fatalf("A's job: %s", r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	img := j["images"].([]any)[0].(map[string]any)
	a.imageID = img["id"].(string)
	// A's modules: a node and a quality policy.
	if r := c.do("PUT", "/v1/nodes/"+a.node, bearer(a.key), nodeswasm.Builtin()); r.status != http.StatusCreated {
		t.Fatalf("A's node: %d %s", r.status, r.body)
	}
	if r := c.do("PUT", "/v1/policies/quality/"+a.policy+"?mode=activate", bearer(a.key), policies.Builtin()); r.status != http.StatusCreated {
		t.Fatalf("A's policy: %d %s", r.status, r.body)
	}
	// A's LoRA (checked against the tiny model, loaded by A's job).
	loraFile, err := os.ReadFile("../../core/lora/testdata/sd15/a.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if r := c.do("PUT", "/v1/loras/"+a.lora+"?model=tiny", bearer(a.key), loraFile); r.status != http.StatusCreated {
		t.Fatalf("A's LoRA: %d %s", r.status, r.body)
	}
	// A signed URL of A's image, issued to A.
	gen, _ := json.Marshal(map[string]any{"prompt": a.prompt, "size": "64x64", "steps": 2, "response_format": "url"})
	r = c.do("POST", "/v1/images/generations", bearer(a.key), gen)
	if r.status != http.StatusOK {
		t.Fatalf("A's generation: %d %s", r.status, r.body)
	}
	var g struct{ Data []struct{ URL string } }
	json.Unmarshal(r.body, &g)
	u, _ := url.Parse(g.Data[0].URL)
	a.signedPath = u.RequestURI()
	// A's ComfyUI prompt (its history entry is A's).
	graph := map[string]any{
		"1": map[string]any{"class_type": "CheckpointLoaderSimple", "inputs": map[string]any{"ckpt_name": "tiny"}},
		"2": map[string]any{"class_type": "CLIPTextEncode", "inputs": map[string]any{"text": a.prompt, "clip": []any{"1", 1}}},
		"3": map[string]any{"class_type": "EmptyLatentImage", "inputs": map[string]any{"width": 64, "height": 64, "batch_size": 1}},
		"4": map[string]any{"class_type": "KSampler", "inputs": map[string]any{"model": []any{"1", 0}, "seed": 1, "steps": 1, "cfg": 5,
			"sampler_name": "euler", "scheduler": "normal", "positive": []any{"2", 0}, "negative": []any{"2", 0}, "latent_image": []any{"3", 0}, "denoise": 1}},
		"5": map[string]any{"class_type": "VAEDecode", "inputs": map[string]any{"samples": []any{"4", 0}, "vae": []any{"1", 2}}},
		"6": map[string]any{"class_type": "SaveImage", "inputs": map[string]any{"images": []any{"5", 0}}},
	}
	pb, _ := json.Marshal(map[string]any{"prompt": graph, "client_id": "a"})
	r = c.do("POST", "/prompt", bearer(a.key), pb)
	var pr struct {
		PromptID string `json:"prompt_id"`
	}
	if json.Unmarshal(r.body, &pr); r.status != http.StatusOK || pr.PromptID == "" {
		t.Fatalf("A's ComfyUI prompt: %d %s", r.status, r.body)
	}
	a.promptID = pr.PromptID
	// C is revoked.
	if err := in.Tenants().Revoke(ctx, "tenant-c"); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for c.do("GET", "/v1/account", bearer(keys["tenant-c"]), nil).status != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("revoked key still accepted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c, in, a, keys
}

type route struct {
	method, path string
	public       bool // security: [] in the document
	admin        bool // only the admin key (security scheme adminKey)
}

func routesOf(t *testing.T, c *client) []route {
	r := c.do("GET", "/v1/openapi.json", "", nil)
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(r.body, &doc); r.status != http.StatusOK || err != nil {
		t.Fatalf("openapi.json: %d %v", r.status, err)
	}
	var out []route
	for path, ops := range doc.Paths {
		for m, raw := range ops {
			switch m {
			case "get", "post", "put", "delete", "patch":
			default:
				continue
			}
			var op struct {
				Security *[]map[string][]string `json:"security"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("openapi.json %s %s: %v", m, path, err)
			}
			admin := false
			if op.Security != nil {
				for _, req := range *op.Security {
					if _, ok := req["adminKey"]; ok && len(*op.Security) == 1 {
						admin = true
					}
				}
			}
			out = append(out, route{strings.ToUpper(m), path, op.Security != nil && len(*op.Security) == 0, admin})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path+out[i].method < out[j].path+out[j].method })
	return out
}

// fill puts A's resources into a route's path parameters, or reports the
// parameter it does not know.
func fill(path string, a tenantA, hook string) (string, error) {
	return fillWith(path, a, hook)
}

// ghostOf is tenant A's resources replaced by ones nobody has, of the same
// shape: another tenant's answer for A's resource must equal its answer
// for the ghost (no existence oracle).
func ghostOf(a tenantA) tenantA {
	g := a
	g.jobID = jobs.NewID()
	g.imageID = jobs.ImageID(g.jobID, 0)
	g.node, g.policy = "z-ghost-node-00", "z-ghost-policy0"
	g.promptID = jobs.NewID()
	g.lora = "z-ghost-lora-00"
	return g
}

func fillWith(path string, a tenantA, hook string) (string, error) {
	var out []string
	for _, seg := range strings.Split(path, "/") {
		if !strings.HasPrefix(seg, "{") {
			out = append(out, seg)
			continue
		}
		switch {
		case seg == "{id}" && strings.HasPrefix(path, "/v1/jobs/"):
			out = append(out, a.jobID)
		case seg == "{id}" && strings.HasPrefix(path, "/v1/images/"):
			out = append(out, a.imageID)
		case seg == "{prompt_id}" && strings.HasPrefix(path, "/history/"):
			out = append(out, a.promptID)
		case seg == "{node_class}":
			out = append(out, "KSampler") // the same for every tenant
		case seg == "{hook}":
			out = append(out, hook)
		case seg == "{name}" && strings.HasPrefix(path, "/v1/nodes/"):
			out = append(out, a.node)
		case seg == "{name}" && strings.HasPrefix(path, "/v1/loras/"):
			out = append(out, a.lora)
		case seg == "{name}" && strings.HasPrefix(path, "/v1/policies/"):
			out = append(out, a.policy)
		case seg == "{id}" && strings.HasPrefix(path, "/v1/admin/tenants/"):
			out = append(out, "tenant-victim")
		case seg == "{key}" && strings.HasPrefix(path, "/v1/admin/tenants/"):
			out = append(out, a.keyID())
		case seg == "{name}" && strings.HasPrefix(path, "/v1/admin/profiles/"):
			out = append(out, "balanced")
		case seg == "{id}" && strings.HasPrefix(path, "/v1/admin/workers/"):
			out = append(out, "any-worker")
		default:
			return "", fmt.Errorf("no resource of tenant A for %s in %s: extend the isolation matrix", seg, path)
		}
	}
	return strings.Join(out, "/"), nil
}

// bodyFor is a valid request body for a route (writes by other tenants get
// these too: they must not touch A's resources).
func bodyFor(method, path string) []byte {
	switch {
	case method == "PUT" && strings.HasPrefix(path, "/v1/nodes/"):
		return nodeswasm.Builtin()
	case method == "PUT" && strings.HasPrefix(path, "/v1/policies/"):
		return policies.Builtin()
	case path == "/v1/jobs" && method == "POST":
		b, _ := json.Marshal(map[string]any{"prompt": "x", "width": 64, "height": 64, "steps": 1})
		return b
	case path == "/v1/images/generations":
		b, _ := json.Marshal(map[string]any{"prompt": "x", "size": "64x64", "steps": 1})
		return b
	case method == "POST" || method == "PUT" || method == "PATCH":
		return []byte("{}")
	}
	return nil
}

// TestIsolationMatrix runs every authenticated route of the OpenAPI
// document with every hostile credential: none, malformed (two kinds) and
// revoked are 401; another tenant's key gets 404 for A's resources and
// never sees, changes or learns of them; a tenant key on operator-only
// routes is 403 (or 401). Public routes never name a tenant or its data.
func TestIsolationMatrix(t *testing.T) {
	c, _, a, keys := setup(t)
	routes := routesOf(t, c)
	secrets := []string{a.jobID, a.imageID, a.prompt, "tenant-victim", a.node, a.policy, a.promptID, a.lora}
	leaks := func(body []byte) string {
		for _, s := range secrets {
			if bytes.Contains(body, []byte(s)) {
				return s
			}
		}
		return ""
	}
	// A's view, which no other credential may change.
	snapshot := func() string {
		var b strings.Builder
		for _, p := range []string{"/v1/jobs/" + a.jobID, "/v1/images/" + a.imageID, "/v1/nodes/" + a.node,
			"/v1/policies/quality/" + a.policy, "/v1/policies/quality", "/v1/nodes", "/v1/loras"} {
			r := c.do("GET", p, bearer(a.key), nil)
			body := r.body
			if strings.HasPrefix(p, "/v1/jobs/") { // drop fields that move by themselves
				var m map[string]any
				json.Unmarshal(body, &m)
				delete(m, "position")
				body, _ = json.Marshal(map[string]any{"status": m["status"], "images": m["images"], "cancel": m["cancel_requested"]})
			}
			fmt.Fprintf(&b, "%s %d %x\n", p, r.status, body)
		}
		return b.String()
	}
	before := snapshot()
	denied := map[string]string{
		"no key":           "",
		"malformed bearer": "Bearer not-a-kiln-key",
		"malformed scheme": "Basic " + a.key,
		"revoked key":      bearer(keys["tenant-c"]),
	}
	cells := 0
	for _, rt := range routes {
		if rt.public {
			r := c.do(rt.method, rt.path, "", nil)
			cells++
			if r.status >= 500 || leaks(r.body) != "" {
				line := ""
				for _, l := range strings.Split(string(r.body), "\n") {
					if leaks([]byte(l)) != "" {
						line = l
						break
					}
				}
				t.Errorf("public %s %s: %d, leaks %q: %s", rt.method, rt.path, r.status, leaks(r.body), line)
			}
			continue
		}
		hooks := []string{""}
		if strings.Contains(rt.path, "{hook}") {
			hooks = []string{"quality", "batching", "eviction"}
		}
		for _, hook := range hooks {
			path, err := fill(rt.path, a, hook)
			if err != nil {
				t.Error(err)
				continue
			}
			if rt.path == "/v1/ws" {
				path += "?subscribe=all"
			}
			if rt.path == "/view" { // ComfyUI's image route names A's image in its query
				path += "?filename=" + a.imageID + ".png"
			}
			name := rt.method + " " + path
			for who, authz := range denied {
				cells++
				if r := c.do(rt.method, path, authz, bodyFor(rt.method, rt.path)); r.status != http.StatusUnauthorized || leaks(r.body) != "" {
					t.Errorf("%s with %s: %d %s", name, who, r.status, r.body)
				}
			}
			// Another tenant's key: writes carry a body that is not a valid
			// module or job, so B never creates namesakes of A's resources.
			cells++
			ghostPath, _ := fillWith(rt.path, ghostOf(a), hook)
			if rt.path == "/v1/ws" {
				ghostPath += "?subscribe=all"
			}
			if rt.path == "/view" {
				ghostPath += "?filename=" + ghostOf(a).imageID + ".png"
			}
			body := bodyFor(rt.method, rt.path)
			if rt.method == "PUT" {
				body = []byte("not a module")
			}
			r := c.do(rt.method, path, bearer(keys["tenant-b"]), body)
			g := c.do(rt.method, ghostPath, bearer(keys["tenant-b"]), body)
			operatorOnly := hook == "batching" || hook == "eviction" || rt.admin
			ghost := ghostOf(a)
			normalise := func(b []byte) string {
				out := string(b)
				for _, p := range [][2]string{{a.jobID, ghost.jobID}, {a.imageID, ghost.imageID}, {a.node, ghost.node}, {a.policy, ghost.policy}, {a.promptID, ghost.promptID}, {a.lora, ghost.lora}} {
					out = strings.ReplaceAll(out, p[0], p[1])
				}
				return out
			}
			switch {
			case r.status >= 500:
				t.Errorf("%s with another tenant's key: %d %s", name, r.status, r.body)
			case leaks(bytes.ReplaceAll(r.body, []byte(strings.TrimPrefix(path, "/")), nil)) != "" && !strings.Contains(path, leaks(r.body)):
				t.Errorf("%s with another tenant's key leaks %q: %s", name, leaks(r.body), r.body)
			case operatorOnly && r.status != http.StatusForbidden && r.status != http.StatusUnauthorized:
				t.Errorf("%s (operator only) with a tenant's key: %d %s", name, r.status, r.body)
			case !operatorOnly && ghostPath != path && (r.status != g.status || normalise(r.body) != string(g.body)):
				t.Errorf("%s with another tenant's key answers unlike for a resource nobody has (existence oracle): %d %s vs %d %s",
					name, r.status, r.body, g.status, g.body)
			}
			// Operator-only routes with A's own key too.
			if operatorOnly {
				cells++
				if r := c.do(rt.method, path, bearer(a.key), bodyFor(rt.method, rt.path)); r.status != http.StatusForbidden && r.status != http.StatusUnauthorized {
					t.Errorf("%s (operator only) with tenant A's key: %d %s", name, r.status, r.body)
				}
			}
		}
	}
	// A signed URL of A's image works only as issued.
	cells++
	if r := c.do("GET", a.signedPath, "", nil); r.status != http.StatusOK {
		t.Errorf("A's signed URL: %d", r.status)
	}
	tampered := strings.Replace(a.signedPath, "tenant=tenant-victim", "tenant=tenant-b", 1)
	cells++
	if r := c.do("GET", tampered, "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("signed URL with another tenant: %d", r.status)
	}
	if after := snapshot(); after != before {
		t.Errorf("tenant A's resources changed under other credentials:\nbefore %s\nafter  %s", before, after)
	}
	t.Logf("isolation matrix: %d routes, %d route × credential checks", len(routes), cells)
}
