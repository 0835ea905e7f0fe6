package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-project/kiln/internal/fixtures"
)

// buildKiln compiles the kiln binary into a temporary directory.
func buildKiln(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kiln")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is a running kiln serve subprocess.
type proc struct {
	t       *testing.T
	cmd     *exec.Cmd
	mu      sync.Mutex
	log     bytes.Buffer
	addr    chan string
	natsURL chan string
	exited  chan error
}

var (
	addrRE = regexp.MustCompile(`msg=(?:listening|"worker probes listening") addr=(\S+)`)
	natsRE = regexp.MustCompile(`msg="embedded NATS accepts connections" url=(\S+)`)
)

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(bin, append([]string{"serve"}, args...)...),
		addr: make(chan string, 1), natsURL: make(chan string, 1), exited: make(chan error, 1)}
	// The built-in model is extracted to a private user cache.
	p.cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+t.TempDir())
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := addrRE.FindStringSubmatch(line); m != nil {
				p.addr <- m[1]
			}
			if m := natsRE.FindStringSubmatch(line); m != nil {
				p.natsURL <- m[1]
			}
		}
		p.exited <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
		}
		if t.Failed() || os.Getenv("KILN_TEST_LOG") != "" {
			p.mu.Lock()
			t.Logf("kiln %s log:\n%s", strings.Join(args, " "), p.log.String())
			p.mu.Unlock()
		}
	})
	return p
}

func (p *proc) waitAddr() string {
	p.t.Helper()
	select {
	case a := <-p.addr:
		return "http://" + a
	case err := <-p.exited:
		p.t.Fatalf("kiln exited before listening: %v", err)
	case <-time.After(120 * time.Second):
		p.t.Fatal("kiln did not start listening within 120 s")
	}
	return ""
}

func (p *proc) waitExit(d time.Duration) error {
	p.t.Helper()
	select {
	case err := <-p.exited:
		return err
	case <-time.After(d):
		p.t.Fatalf("kiln did not exit within %v", d)
	}
	return nil
}

func call(t *testing.T, method, url string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, url, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func submitJob(t *testing.T, base string, steps int) string {
	t.Helper()
	code, m := call(t, "POST", base+"/v1/jobs", map[string]any{"prompt": "durable", "width": 64, "height": 64,
		"steps": steps, "guidance": 5, "profile": "quality_first"})
	if code != http.StatusAccepted {
		t.Fatalf("submit: %d %v", code, m)
	}
	return m["id"].(string)
}

// waitStatus polls a job until its status is one of want.
func waitStatus(t *testing.T, base, id string, d time.Duration, want ...string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		code, m := call(t, "GET", base+"/v1/jobs/"+id, nil)
		if code == http.StatusOK {
			for _, w := range want {
				if m["status"] == w {
					return m
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: %d %v, want status %v", id, code, m, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCrashRestartKeepsEveryJob kills the whole server (kiln -9) while one
// job runs and others wait, restarts it on the same data directory and
// checks that every accepted job completes or fails with a reason.
func TestCrashRestartKeepsEveryJob(t *testing.T) {
	model := fixtures.Require(t, "sd15-tiny/model")
	bin := buildKiln(t)
	data := t.TempDir()
	args := []string{"--data-dir", data, "--listen", "127.0.0.1:0", "--model", "tiny=" + model, "--default-model", "tiny", "--ack-wait", "2s"}
	p := startProc(t, bin, args...)
	base := p.waitAddr()
	var ids []string
	for i := 0; i < 4; i++ {
		ids = append(ids, submitJob(t, base, 30))
	}
	waitStatus(t, base, ids[0], 60*time.Second, "running")
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.waitExit(30 * time.Second)

	p2 := startProc(t, bin, args...)
	base = p2.waitAddr()
	for _, id := range ids {
		m := waitStatus(t, base, id, 180*time.Second, "succeeded", "failed")
		if m["status"] == "failed" {
			e, _ := m["error"].(map[string]any)
			if e == nil || e["message"] == "" {
				t.Errorf("job %s failed without a reason: %v", id, m)
			}
		}
	}
	// The job that was running when the process died ran again.
	if _, m := call(t, "GET", base+"/v1/jobs/"+ids[0], nil); m["attempts"].(float64) < 2 && m["status"] == "succeeded" {
		t.Errorf("interrupted job not redelivered: %v", m)
	}
}

// TestSIGTERMFinishesOrHandsBack: on SIGTERM a running job finishes within
// the grace period; one that cannot is handed back and completes after a
// restart, without using up an attempt.
func TestSIGTERMFinishesOrHandsBack(t *testing.T) {
	model := fixtures.Require(t, "sd15-tiny/model")
	bin := buildKiln(t)
	data := t.TempDir()
	args := []string{"--data-dir", data, "--listen", "127.0.0.1:0", "--model", "tiny=" + model, "--default-model", "tiny"}

	// Enough grace: the job finishes before the process exits.
	p := startProc(t, bin, append(args, "--shutdown-timeout", "60s")...)
	base := p.waitAddr()
	id := submitJob(t, base, 20)
	waitStatus(t, base, id, 60*time.Second, "running", "succeeded")
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.waitExit(90 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	// No grace: the job is handed back.
	p = startProc(t, bin, append(args, "--shutdown-timeout", "1ms")...)
	base = p.waitAddr()
	if m := waitStatus(t, base, id, 10*time.Second, "succeeded", "queued", "running"); m["status"] != "succeeded" {
		t.Fatalf("job after graceful shutdown: %v", m)
	}
	id2 := submitJob(t, base, 60)
	waitStatus(t, base, id2, 60*time.Second, "running")
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.waitExit(60 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	p = startProc(t, bin, args...)
	base = p.waitAddr()
	m := waitStatus(t, base, id2, 180*time.Second, "succeeded")
	if m["attempts"].(float64) != 1 {
		t.Fatalf("handed-back job used %v attempts", m["attempts"])
	}
}

// TestGatewayAndTwoWorkers runs the roles as separate processes: a gateway
// whose embedded NATS server listens for the workers, and two workers.
func TestGatewayAndTwoWorkers(t *testing.T) {
	model := fixtures.Require(t, "sd15-tiny/model")
	bin := buildKiln(t)
	g := startProc(t, bin, "--role", "gateway", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0",
		"--nats-listen", "127.0.0.1:0", "--model", "tiny="+model, "--default-model", "tiny", "--metrics-interval", "200ms")
	var natsURL string
	select {
	case natsURL = <-g.natsURL:
	case <-time.After(120 * time.Second):
		t.Fatal("no NATS URL from the gateway")
	}
	base := g.waitAddr()
	for i := 0; i < 2; i++ {
		w := startProc(t, bin, "--role", "worker", "--nats", natsURL, "--listen", "127.0.0.1:0",
			"--model", "tiny="+model, "--default-model", "tiny", "--metrics-interval", "200ms", "--data-dir", t.TempDir())
		probe := w.waitAddr()
		if code, _ := call(t, "GET", probe+"/readyz", nil); code != http.StatusOK {
			t.Fatalf("worker readyz %d", code)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, st := call(t, "GET", base+"/v1/status", nil)
		if ws, _ := st["workers"].([]any); len(ws) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway sees workers %v", st["workers"])
		}
		time.Sleep(50 * time.Millisecond)
	}
	var ids []string
	for i := 0; i < 6; i++ {
		ids = append(ids, submitJob(t, base, 25))
	}
	workers := map[string]int{}
	for _, id := range ids {
		m := waitStatus(t, base, id, 180*time.Second, "succeeded")
		workers[m["worker"].(string)]++
	}
	if len(workers) != 2 {
		t.Fatalf("jobs ran on %v, want both workers", workers)
	}
	t.Logf("jobs per worker: %v", workers)
}

func TestTenantsCommand(t *testing.T) {
	data := t.TempDir()
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := runMain(context.Background(), append([]string{"tenants"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	code, key, stderr := run("create", "acme", "--data-dir", data, "--max-steps", "30")
	if code != 0 || !strings.HasPrefix(key, "kiln_") {
		t.Fatalf("create: %d %q %s", code, key, stderr)
	}
	if code, _, _ := run("create", "acme", "--data-dir", data); code == 0 {
		t.Fatal("duplicate tenant created")
	}
	if code, _, stderr := run("create", "Bad Name", "--data-dir", data); code == 0 || !strings.Contains(stderr, "invalid tenant id") {
		t.Fatalf("bad name: %d %s", code, stderr)
	}
	code, out, _ := run("quota", "acme", "--data-dir", data, "--concurrent-jobs", "9")
	if code != 0 || !strings.Contains(out, "concurrent_jobs=9") || !strings.Contains(out, "max_steps=30") {
		t.Fatalf("quota: %d %s", code, out)
	}
	code, out, _ = run("list", "--data-dir", data)
	if code != 0 || !regexp.MustCompile(`acme\s+active\s+1\s+9`).MatchString(out) {
		t.Fatalf("list: %d\n%s", code, out)
	}
	if code, _, _ := run("revoke", "acme", "--data-dir", data); code != 0 {
		t.Fatal("revoke failed")
	}
	if _, out, _ := run("list", "--data-dir", data); !regexp.MustCompile(`acme\s+revoked\s+0`).MatchString(out) {
		t.Fatalf("list after revoke:\n%s", out)
	}
	if code, _, stderr := run("frobnicate"); code != 2 || !strings.Contains(stderr, "unknown tenants command") {
		t.Fatalf("unknown subcommand: %d %s", code, stderr)
	}
}

func TestServeRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "kiln.yaml")
	os.WriteFile(cfgFile, []byte("listen: 127.0.0.1:0\nworkerz: 2\n"), 0o644)
	var out, errb bytes.Buffer
	code := runMain(context.Background(), []string{"serve", "--config", cfgFile}, &out, &errb)
	if code == 0 || !strings.Contains(errb.String(), "workerz") {
		t.Fatalf("unknown key: %d %s", code, errb.String())
	}
	errb.Reset()
	code = runMain(context.Background(), []string{"serve", "--role", "chef"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "role") {
		t.Fatalf("bad role: %d %s", code, errb.String())
	}
}

// TestServeWithoutFlags runs `kiln serve` as a first-time user would, with
// no model flags (only a private data directory and a free port): it serves
// the web page and the built-in model, and a job with nothing but a prompt
// becomes a 128×128 PNG.
func TestServeWithoutFlags(t *testing.T) {
	bin := buildKiln(t)
	p := startProc(t, bin, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0")
	base := p.waitAddr()
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "<html") {
		t.Fatalf("GET /: %d %.200s", resp.StatusCode, page)
	}
	code, m := call(t, "POST", base+"/v1/jobs", map[string]any{"prompt": "a red circle on the left on a yellow background"})
	if code != http.StatusAccepted {
		t.Fatalf("submit: %d %v", code, m)
	}
	j := waitStatus(t, base, m["id"].(string), 120*time.Second, "succeeded", "failed")
	if j["status"] != "succeeded" {
		t.Fatalf("job %v", j)
	}
	img := j["images"].([]any)[0].(map[string]any)
	resp, err = http.Get(base + img["url"].(string))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cfg, err := png.DecodeConfig(resp.Body)
	if err != nil || cfg.Width != 128 || cfg.Height != 128 {
		t.Fatalf("image: %+v %v, want a 128×128 PNG", cfg, err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.waitExit(60 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}
