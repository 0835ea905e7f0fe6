package auth

import (
	"context"
	"net/http"
	"path/filepath"
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
	if p, err := a.Authenticate(req("")); err != nil || !p.Local || p.Tenant != "local" {
		t.Fatalf("keyless without tenants: %+v %v", p, err)
	}
	_, key, _ := st.Create(ctx, "acme", local)
	eventually(t, func() bool { _, err := a.Authenticate(req(key)); return err == nil })
	if _, err := a.Authenticate(req("")); err == nil || err.Status != 401 {
		t.Fatal("keyless accepted once a tenant exists")
	}
	st.Revoke(ctx, "acme")
	eventually(t, func() bool { _, err := a.Authenticate(req(key)); return err != nil })
	// Keyless comes back only because the listener is loopback.
	eventually(t, func() bool { _, err := a.Authenticate(req("")); return err == nil })
	remote := New(st, false, local)
	go remote.Run(ctx)
	<-remote.Synced()
	if _, err := remote.Authenticate(req("")); err == nil {
		t.Fatal("keyless accepted on a non-loopback listener")
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
