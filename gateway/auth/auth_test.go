package auth

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/server/broker"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/tenants"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:8080": true, "localhost:1": true, "[::1]:80": true, "127.3.4.5:1": true,
		"0.0.0.0:8080": false, ":8080": false, "192.168.1.2:80": false, "[::]:80": false, "bad": false} {
		if IsLoopback(addr) != want {
			t.Errorf("IsLoopback(%q) != %v", addr, want)
		}
	}
}

func TestKeyFromRequest(t *testing.T) {
	r, _ := http.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer kiln_x_y")
	if KeyFromRequest(r) != "kiln_x_y" {
		t.Fatal("bearer")
	}
	r.Header.Del("Authorization")
	r.Header.Set("Sec-WebSocket-Protocol", "kiln.v1, kiln.bearer.kiln_a_b")
	if KeyFromRequest(r) != "kiln_a_b" {
		t.Fatal("subprotocol")
	}
}

func TestAuthenticateFollowsTheBucket(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := broker.Start(ctx, broker.Options{DataDir: filepath.Join(t.TempDir(), "d")})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	st, _ := tenants.Open(ctx, b.JS, 1)
	if m, err := st.DecideMode(ctx, tenants.RequestAuto, true); err != nil || !m.Keyless() {
		t.Fatalf("a fresh loopback store is not keyless: %+v %v", m, err)
	}
	local := config.Quota{ConcurrentJobs: 1, ImagesPerMinute: 1, MaxPixels: 1, MaxSteps: 1, MaxN: 1}
	a := New(st, true, local)
	go a.Run(ctx)
	<-a.Synced()
	req := func(key string) *http.Request {
		r, _ := http.NewRequest("GET", "/", nil)
		if key != "" {
			r.Header.Set("Authorization", "Bearer "+key)
		}
		return r
	}
	// Keyless: no key, a dummy key (OpenAI SDKs always send one) and a
	// malformed header are all the local tenant.
	for _, k := range []string{"", "sk-dummy", "kiln_aaaaaaaaaaaaaaaa_" + strings.Repeat("b", 40)} {
		if p, err := a.Authenticate(req(k)); err != nil || !p.Local || p.Tenant != "local" {
			t.Fatalf("keyless with key %q: %+v %v", k, p, err)
		}
	}
	if a.Mode().Mode != tenants.ModeKeyless {
		t.Fatalf("mode %+v", a.Mode())
	}
	_, key, _ := st.Create(ctx, "acme", local)
	eventually(t, func() bool { _, err := a.Authenticate(req(key)); return err == nil })
	// The tenant record and the mode change reach the mirror as two
	// updates: the tenant's own key may work a moment before keys are
	// required of everyone.
	eventually(t, func() bool { return !a.Mode().Keyless() })
	for _, k := range []string{"", "sk-dummy"} {
		if _, err := a.Authenticate(req(k)); err == nil || err.Status != 401 {
			t.Fatalf("key %q accepted once a tenant exists", k)
		}
	}
	st.Revoke(ctx, "acme")
	eventually(t, func() bool { _, err := a.Authenticate(req(key)); return err != nil })
	// Revoking the last tenant never reopens the server (fail closed).
	time.Sleep(50 * time.Millisecond)
	for _, k := range []string{"", "sk-dummy"} {
		if _, err := a.Authenticate(req(k)); err == nil || err.Status != 401 {
			t.Fatalf("key %q accepted after the last tenant was revoked", k)
		}
	}
	if a.Mode().Keyless() {
		t.Fatal("mode reports keyless after revocation")
	}
	// Nor does a restart: the store remembers keys were required.
	if m, err := st.DecideMode(ctx, tenants.RequestAuto, true); err != nil || m.Keyless() {
		t.Fatalf("restart after revocation decided %+v %v", m, err)
	}
	remote := New(st, false, local)
	go remote.Run(ctx)
	<-remote.Synced()
	if _, err := remote.Authenticate(req("")); err == nil {
		t.Fatal("keyless accepted on a non-loopback listener")
	}
	// Only the operator's explicit choice brings keyless back.
	if _, err := st.DecideMode(ctx, tenants.RequestKeyless, false); err == nil {
		t.Fatal("keyless accepted for a non-loopback listener")
	}
	if m, err := st.DecideMode(ctx, tenants.RequestKeyless, true); err != nil || !m.Keyless() {
		t.Fatalf("explicit keyless: %+v %v", m, err)
	}
	eventually(t, func() bool { _, err := a.Authenticate(req("")); return err == nil })
	if _, err := remote.Authenticate(req("")); err == nil {
		t.Fatal("keyless accepted on a non-loopback listener")
	}
}

func TestModeWithoutRecordIsKeyed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := broker.Start(ctx, broker.Options{DataDir: filepath.Join(t.TempDir(), "d")})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	st, _ := tenants.Open(ctx, b.JS, 1)
	a := New(st, true, config.Quota{})
	go a.Run(ctx)
	<-a.Synced()
	r, _ := http.NewRequest("GET", "/", nil)
	if _, err := a.Authenticate(r); err == nil {
		t.Fatal("keyless without a recorded mode")
	}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
