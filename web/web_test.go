package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path, host string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if host != "" {
		req.Host = host
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestHandlerServesIndexWithHeaders(t *testing.T) {
	res := get(t, Handler(), "/", "127.0.0.1:8080")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET / = %d", res.StatusCode)
	}
	body, _ := io.ReadAll(res.Body)
	if !strings.Contains(string(body), `<script type="module" src="js/main.js">`) {
		t.Fatalf("index.html does not load js/main.js")
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("Content-Type %q", ct)
	}
	csp := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{"script-src 'self'", "connect-src 'self' ws://127.0.0.1:8080", "img-src 'self' blob:", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if res.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("no nosniff header")
	}
}

func TestHandlerContentTypesAndMissing(t *testing.T) {
	h := Handler()
	for path, want := range map[string]string{
		"/js/main.js": "text/javascript", "/css/app.css": "text/css", "/favicon.svg": "image/svg+xml",
	} {
		res := get(t, h, path, "")
		if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), want) {
			t.Errorf("GET %s = %d %q, want 200 %s", path, res.StatusCode, res.Header.Get("Content-Type"), want)
		}
	}
	for _, path := range []string{"/nope.js", "/e2e/package.json", "/embed.go"} {
		if res := get(t, h, path, ""); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, res.StatusCode)
		}
	}
}

func TestHostileHostIsKeptOutOfTheHeader(t *testing.T) {
	res := get(t, Handler(), "/", "evil.example; script-src *")
	csp := res.Header.Get("Content-Security-Policy")
	if strings.Contains(csp, "evil") || !strings.Contains(csp, "connect-src 'self';") {
		t.Fatalf("CSP %q", csp)
	}
}

// Every module import and every file index.html names must be embedded: a
// missing file would break the page only in the browser.
func TestReferencedFilesAreEmbedded(t *testing.T) {
	importRE := regexp.MustCompile(`(?m)^\s*import\s[^;]*?from\s+'(\./[^']+)'`)
	refRE := regexp.MustCompile(`(?:src|href)="([a-z][^":]*\.(?:js|css|svg))"`)
	index, err := fs.ReadFile(Files, "index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range refRE.FindAllStringSubmatch(string(index), -1) {
		if _, err := fs.Stat(Files, m[1]); err != nil {
			t.Errorf("index.html references %s: %v", m[1], err)
		}
	}
	mods, _ := fs.Glob(Files, "js/*.js")
	if len(mods) < 5 {
		t.Fatalf("only %d modules embedded", len(mods))
	}
	for _, mod := range mods {
		src, _ := fs.ReadFile(Files, mod)
		for _, m := range importRE.FindAllStringSubmatch(string(src), -1) {
			target := "js/" + strings.TrimPrefix(m[1], "./")
			if _, err := fs.Stat(Files, target); err != nil {
				t.Errorf("%s imports %s, which is not embedded", mod, m[1])
			}
		}
	}
}
