package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/app"
	"github.com/kiln-project/kiln/server/config"
)

// TestTenantsCommandTalksToRunningServer: with --server the command goes
// through the admin API of a running server (which holds the data
// directory), needs the admin key, and falls back to the data directory
// once no server answers.
func TestTenantsCommandTalksToRunningServer(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv("KILN_ADMIN_KEY", "")
	t.Setenv("KILN_SERVER", "")
	const adminKey = "kilnadm_abcdefghijklmnopqrstuvwxyz0123456789"
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "admin.key")
	if err := os.WriteFile(keyFile, []byte(adminKey), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir, cfg.Listen, cfg.AdminKeyFile = data, "127.0.0.1:0", keyFile
	in, err := app.Start(context.Background(), app.Options{Config: cfg, NoWasm: true})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			in.Stop(context.Background())
		}
	}()
	base := "http://" + in.Addr()
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := runMain(context.Background(), append([]string{"tenants"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	code, key, stderr := run("create", "acme", "--server", base, "--admin-key-file", keyFile, "--max-steps", "30", "--weight", "2")
	key = strings.TrimSpace(key)
	if code != 0 || !strings.HasPrefix(key, "kiln_") || !strings.Contains(stderr, "max_steps=30") {
		t.Fatalf("create through the server: %d %q %s", code, key, stderr)
	}
	// The running server knows the tenant at once.
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest("GET", base+"/v1/account", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the created tenant's key never worked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Setenv("KILN_ADMIN_KEY", adminKey)
	code, out, _ := run("quota", "acme", "--server", base, "--quality", "adaptive")
	if code != 0 || !strings.Contains(out, "max_steps=30") || !strings.Contains(out, "weight=2") || !strings.Contains(out, "quality=adaptive") {
		t.Fatalf("quota through the server: %d %s", code, out)
	}
	if code, out, _ := run("list", "--server", base); code != 0 || !regexp.MustCompile(`acme\s+active\s+1\s+`).MatchString(out) {
		t.Fatalf("list through the server: %d\n%s", code, out)
	}
	// Without the admin key: refused, with a hint.
	t.Setenv("KILN_ADMIN_KEY", "")
	if code, _, stderr := run("list", "--server", base); code == 0 || !strings.Contains(stderr, "admin key") {
		t.Fatalf("no admin key: %d %s", code, stderr)
	}
	if code, _, stderr := run("list", "--server", base, "--admin-key", "kilnadm_wrongwrongwrongwrongwrongwrongwrong"); code == 0 || !strings.Contains(stderr, "401") {
		t.Fatalf("wrong admin key: %d %s", code, stderr)
	}
	// The data directory is the server's while it runs.
	if code, _, stderr := run("list", "--data-dir", data); code == 0 || !strings.Contains(stderr, "--server") {
		t.Fatalf("data directory of a running server: %d %s", code, stderr)
	}
	in.Stop(context.Background())
	stopped = true
	// No server answers any more: the data directory is used.
	code, out, stderr = run("list", "--server", base, "--data-dir", data)
	if code != 0 || !strings.Contains(stderr, "no kiln server answers") || !regexp.MustCompile(`acme\s+active\s+1\s+`).MatchString(out) {
		t.Fatalf("fallback: %d %s\n%s", code, stderr, out)
	}
}
