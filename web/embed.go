// Package web holds Kiln's browser client: plain HTML, CSS and ES modules
// with no build step, embedded in the binary and served by the gateway at
// "/". The page talks to the native API under /v1 and to the WebSocket
// event stream at /v1/ws (see docs/websocket.md). Its browser tests live
// in web/e2e and run through scripts/web-e2e.sh.
package web

import (
	"embed"
	"net/http"
)

// Files are the client's static files: index.html at the root, styles
// under css/ and ES modules under js/.
//
//go:embed index.html favicon.svg css js
var Files embed.FS

// Handler serves Files: index.html at "/", every other file at its path,
// 404 for anything else. Responses carry a strict Content-Security-Policy
// (same-origin scripts, styles and connections; images also from blob:
// URLs, which is how previews and authenticated images are shown), are
// revalidated on each load so that a new binary's client is picked up at
// once, and are never sniffed or framed.
func Handler() http.Handler {
	files := http.FileServerFS(Files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy(r))
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// contentSecurityPolicy allows only this origin (and its WebSocket URLs,
// which older browsers do not count as 'self').
func contentSecurityPolicy(r *http.Request) string {
	connect := "'self'"
	if plainHost(r.Host) {
		if r.TLS != nil {
			connect += " wss://" + r.Host
		} else {
			connect += " ws://" + r.Host
		}
	}
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " +
		"connect-src " + connect + "; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}

// plainHost reports whether a Host header is made only of the characters
// of a host name, an IP literal and a port (so it can go into a header).
func plainHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for _, c := range h {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '-' || c == ':' || c == '[' || c == ']'
		if !ok {
			return false
		}
	}
	return true
}
