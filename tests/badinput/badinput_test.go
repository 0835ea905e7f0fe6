// Package badinput holds the bad-input corpus: malformed JSON, numbers out
// of range, oversized bodies and headers, slow clients, image bombs and
// truncated images, multipart where none belongs, hostile paths and
// queries, thrown at a real server. Every answer must be a 4xx, the
// server must keep serving, and its heap must stay bounded.
package badinput_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-project/kiln/app"
	"github.com/kiln-project/kiln/internal/fixtures"
	"github.com/kiln-project/kiln/server/config"
)

type entry struct {
	name, method, path string
	header             http.Header
	body               []byte
}

func jsonEntry(name, path, body string) entry {
	return entry{name: name, method: "POST", path: path, header: http.Header{"Content-Type": {"application/json"}}, body: []byte(body)}
}

func encodePNG(img image.Image) []byte {
	var b bytes.Buffer
	png.Encode(&b, img)
	return b.Bytes()
}

// pngHeaderOnly is a PNG signature and an IHDR claiming w×h RGBA at depth,
// followed by a truncated IDAT.
func pngHeaderOnly(w, h uint32, depth byte) []byte {
	out := []byte("\x89PNG\r\n\x1a\n")
	ihdr := binary.BigEndian.AppendUint32(nil, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, depth, 6, 0, 0, 0)
	chunk := func(typ string, data []byte) {
		out = binary.BigEndian.AppendUint32(out, uint32(len(data)))
		c := append([]byte(typ), data...)
		out = append(out, c...)
		out = binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(c))
	}
	chunk("IHDR", ihdr)
	chunk("IDAT", []byte{0x78, 0x9c, 0x01})
	return out
}

func initImage(img []byte) string {
	b, _ := json.Marshal(map[string]any{"prompt": "x", "init_image": base64.StdEncoding.EncodeToString(img), "steps": 1})
	return string(b)
}

func corpus() []entry {
	var es []entry
	for i, body := range []string{"", "{", "[]", "null", "42", `"str"`, `{"prompt": }`, `{"prompt":"x",}`, "{\"prompt\":\"x\"}garbage",
		strings.Repeat("[", 100000), `{"prompt":` + strings.Repeat("[", 5000) + `}`, "{\"prompt\":\"\xff\xfe\"}", `{"prompt":"x","prompt":{}}`,
		`{"prompt":"x","unknown_field":1}`, `{"prompt":1}`, `{"prompt":"x","width":"64"}`, `{"prompt":"x","nodes":"all"}`} {
		es = append(es, jsonEntry(fmt.Sprintf("malformed json %d", i), "/v1/jobs", body))
		es = append(es, jsonEntry(fmt.Sprintf("malformed json (openai) %d", i), "/v1/images/generations", body))
	}
	for _, f := range []string{`"width":-1`, `"width":1e309`, `"width":99999999999999999999`, `"height":0`, `"steps":1000000000`,
		`"steps":-3`, `"n":-5`, `"n":100000`, `"seed":-1`, `"seed":18446744073709551616`, `"guidance":1e308`, `"guidance":-1`,
		`"strength":2`, `"strength":-0.5`, `"width":64.5`, `"clip_skip":1000`, `"priority":"urgent"`, `"sampler":"nope"`,
		`"model":"../../etc/passwd"`, `"profile":"\u0000"`, `"negative_prompt":"` + strings.Repeat("x", 100000) + `"`} {
		es = append(es, jsonEntry("out of range "+f[:min(len(f), 30)], "/v1/jobs", `{"prompt":"x",`+f+`}`))
	}
	for _, f := range []string{`"n":0`, `"n":11`, `"size":"0x0"`, `"size":"-64x64"`, `"size":"64x"`, `"size":"99999999999x64"`,
		`"response_format":"gif"`, `"quality":"ultra"`, `"steps":-1`, `"style":7`} {
		es = append(es, jsonEntry("openai out of range "+f, "/v1/images/generations", `{"prompt":"x",`+f+`}`))
	}
	// Oversized bodies and headers.
	es = append(es, jsonEntry("17 MiB body", "/v1/jobs", `{"prompt":"`+strings.Repeat("x", 17<<20)+`"}`))
	es = append(es, jsonEntry("17 MiB openai body", "/v1/images/generations", `{"prompt":"`+strings.Repeat("x", 17<<20)+`"}`))
	es = append(es, entry{name: "huge header", method: "GET", path: "/v1/models", header: http.Header{"X-Pad": {strings.Repeat("x", 200<<10)}}})
	es = append(es, entry{name: "many headers", method: "GET", path: "/v1/models", header: func() http.Header {
		h := http.Header{}
		for i := 0; i < 10000; i++ {
			h.Set(fmt.Sprintf("X-H%d", i), "v")
		}
		return h
	}()})
	// Image bombs and broken images.
	deep := encodePNG(image.NewNRGBA64(image.Rect(0, 0, 2048, 2048)))
	truncated := encodePNG(image.NewNRGBA(image.Rect(0, 0, 64, 64)))
	for name, img := range map[string][]byte{
		"16-bit 2048² png":       deep,
		"truncated png":          truncated[:len(truncated)/2],
		"png claiming 65535²":    pngHeaderOnly(65535, 65535, 8),
		"png claiming 2^31 wide": pngHeaderOnly(1<<31-1, 1, 8),
		"png with zero size":     pngHeaderOnly(0, 0, 8),
		"png with bad depth":     pngHeaderOnly(64, 64, 7),
		"jpeg soi only":          {0xFF, 0xD8},
		"jpeg claiming 65535²":   {0xFF, 0xD8, 0xFF, 0xC0, 0, 17, 8, 0xFF, 0xFF, 0xFF, 0xFF, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1},
		"gif":                    []byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"),
		"random bytes":           bytes.Repeat([]byte{0x13, 0x37}, 5000),
	} {
		es = append(es, jsonEntry("init image: "+name, "/v1/jobs", initImage(img)))
	}
	es = append(es, jsonEntry("init image: not base64", "/v1/jobs", `{"prompt":"x","init_image":"@@@@"}`))
	es = append(es, jsonEntry("init image: data url not base64", "/v1/jobs", `{"prompt":"x","init_image":"data:image/png,abc"}`))
	// Multipart where JSON or a module belongs.
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	for i := 0; i < 200; i++ {
		fw, _ := mw.CreateFormFile(fmt.Sprintf("image%d", i), strings.Repeat("n", 1000)+".png")
		fw.Write(deep[:1000])
	}
	mw.Close()
	mpHeader := http.Header{"Content-Type": {mw.FormDataContentType()}}
	es = append(es, entry{name: "multipart job", method: "POST", path: "/v1/jobs", header: mpHeader, body: mp.Bytes()})
	es = append(es, entry{name: "multipart openai", method: "POST", path: "/v1/images/generations", header: mpHeader, body: mp.Bytes()})
	es = append(es, entry{name: "multipart module", method: "PUT", path: "/v1/nodes/mp", header: mpHeader, body: mp.Bytes()})
	es = append(es, entry{name: "multipart unterminated", method: "POST", path: "/v1/jobs",
		header: http.Header{"Content-Type": {"multipart/form-data; boundary=x"}}, body: []byte("--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n" + strings.Repeat("a", 1<<20))})
	// Modules that are not modules.
	for name, b := range map[string][]byte{"empty": {}, "text": []byte("hello"), "wasm magic only": []byte("\x00asm\x01\x00\x00\x00\x0a\xff\xff\xff\xff\x0f"),
		"17 MiB": bytes.Repeat([]byte{0}, 17<<20)} {
		es = append(es, entry{name: "module: " + name, method: "PUT", path: "/v1/nodes/bad", header: http.Header{"Content-Type": {"application/wasm"}}, body: b})
		es = append(es, entry{name: "policy: " + name, method: "PUT", path: "/v1/policies/quality/bad", header: http.Header{"Content-Type": {"application/wasm"}}, body: b})
	}
	// Hostile paths and queries.
	for _, p := range []string{"/v1/jobs/..%2F..%2Fetc%2Fpasswd", "/v1/jobs/%00", "/v1/jobs/" + strings.Repeat("a", 10000),
		"/v1/images/x-999999", "/v1/images/" + strings.Repeat("0", 26) + "-1?sig=zz&tenant=local&expires=1", "/v1/jobs?limit=-1",
		"/v1/jobs?limit=1000000000", "/v1/jobs?cursor=%ff%fe", "/v1/jobs?status=exploded", "/v1/nodes/" + strings.Repeat("n", 300),
		"/v1/policies/none", "/v1/policies/quality/..", "/v1/nope"} {
		es = append(es, entry{name: "path " + p[:min(len(p), 40)], method: "GET", path: p})
	}
	es = append(es, entry{name: "method TRACE", method: "TRACE", path: "/v1/jobs"})
	es = append(es, entry{name: "method PATCH", method: "PATCH", path: "/v1/jobs"})
	return es
}

// TestBadInputCorpus: every entry is a 4xx, the server stays alive, and
// the heap stays bounded while twenty copies of each image bomb arrive at
// once.
func TestBadInputCorpus(t *testing.T) {
	model := fixtures.Require(t, "sd15-tiny/model")
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.Models = map[string]string{"tiny": model}
	cfg.BuiltinModel = false
	cfg.ReadHeaderTimeout = config.Duration(time.Second)
	cfg.ReadTimeout = config.Duration(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	in, err := app.Start(ctx, app.Options{Config: cfg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Stop(context.Background()) })
	base := "http://" + in.Addr()

	// Heap watcher.
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	do := func(e entry) (int, error) {
		var rd io.Reader
		if e.body != nil {
			rd = bytes.NewReader(e.body)
		}
		req, err := http.NewRequest(e.method, base+e.path, rd)
		if err != nil {
			return 0, err
		}
		for k, v := range e.header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	alive := func() {
		t.Helper()
		if code, err := do(entry{method: "GET", path: "/healthz"}); err != nil || code != 200 {
			t.Fatalf("server not serving: %d %v", code, err)
		}
	}
	var fivexx, total int
	for _, e := range corpus() {
		n := 1
		if strings.HasPrefix(e.name, "init image") || strings.HasPrefix(e.name, "multipart") {
			n = 20 // concurrently: the decode budget must hold
		}
		var mu sync.Mutex
		var ewg sync.WaitGroup
		for i := 0; i < n; i++ {
			ewg.Add(1)
			go func() {
				defer ewg.Done()
				code, err := do(e)
				mu.Lock()
				defer mu.Unlock()
				total++
				switch {
				case err != nil && e.name != "huge header" && e.name != "many headers":
					t.Errorf("%s: %v", e.name, err)
				case code >= 500:
					fivexx++
					t.Errorf("%s: %d", e.name, code)
				case err == nil && (code < 400 || code > 499):
					t.Errorf("%s: %d, want a 4xx", e.name, code)
				}
			}()
		}
		ewg.Wait()
		alive()
	}

	// Slowloris: connections that send headers a byte at a time are cut
	// at the header timeout while others are served.
	var conns []net.Conn
	for i := 0; i < 50; i++ {
		c, err := net.Dial("tcp", in.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET /v1/models HTTP/1.1\r\nHost: x\r\n"))
		conns = append(conns, c)
	}
	alive()
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range conns {
		c.SetReadDeadline(deadline)
		for {
			if _, err := c.Write([]byte("X-Slow: 1\r\n")); err != nil {
				break
			}
			buf := make([]byte, 1)
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := c.Read(buf); err != nil && !isTimeout(err) {
				break // closed by the server
			}
			if time.Now().After(deadline) {
				t.Fatal("a slow client was never cut off")
			}
		}
		c.Close()
		total++
	}
	alive()
	close(stop)
	wg.Wait()
	t.Logf("bad-input corpus: %d requests, %d × 5xx, peak heap %d MiB", total, fivexx, peak.Load()>>20)
	// Twenty concurrent 17 MiB bodies are read up to the limit at most, and
	// image decodes hold at most the decode budget (64 MiB).
	if peak.Load() > 1<<30 {
		t.Errorf("peak heap %d MiB", peak.Load()>>20)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
