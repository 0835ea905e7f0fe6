package tenants

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/server/broker"
	"github.com/kiln-project/kiln/server/config"
)

var quota = config.Quota{ConcurrentJobs: 1, ImagesPerMinute: 10, MaxPixels: 4096, MaxSteps: 10, MaxN: 1}

func TestKeysAreHashedAndVerified(t *testing.T) {
	ctx := context.Background()
	b, err := broker.Start(ctx, broker.Options{DataDir: filepath.Join(t.TempDir(), "d")})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s, err := Open(ctx, b.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	tn, key, err := s.Create(ctx, "acme", quota)
	if err != nil || tn.ID != "acme" {
		t.Fatal(err)
	}
	id, secret, ok := ParseKey(key)
	if !ok {
		t.Fatalf("key %q does not parse", key)
	}
	k, err := s.GetKey(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(k.Hash, secret) || k.Hash != HashSecret(secret) {
		t.Fatal("stored key is not the hash of the secret")
	}
	if !k.Verify(secret) || k.Verify(secret+"x") || k.Verify("") {
		t.Fatal("verification wrong")
	}
	if _, _, err := s.Create(ctx, "acme", quota); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	for _, bad := range []string{"local", "Bad", "", "a.b"} {
		if _, _, err := s.Create(ctx, bad, quota); err == nil {
			t.Errorf("tenant %q created", bad)
		}
	}
	if _, _, err := s.Create(ctx, "zero", config.Quota{}); err == nil {
		t.Error("zero quota accepted")
	}
	key2, err := s.NewKey(ctx, "acme")
	if err != nil || key2 == key {
		t.Fatal(err)
	}
	list, keys, err := s.List(ctx)
	if err != nil || len(list) != 1 || keys["acme"] != 2 {
		t.Fatalf("list %v %v %v", list, keys, err)
	}
	q := quota
	q.MaxSteps = 99
	if tn, err := s.SetQuota(ctx, "acme", q); err != nil || tn.Quota.MaxSteps != 99 || tn.QuotaVersion != 2 {
		t.Fatalf("set quota: %+v %v", tn, err)
	}
	if err := s.Revoke(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if k, _ := s.GetKey(ctx, id); !k.Revoked {
		t.Fatal("key not revoked")
	}
	if _, err := s.NewKey(ctx, "acme"); err == nil {
		t.Fatal("key added to a revoked tenant")
	}
	if err := s.Revoke(ctx, "ghost"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
}

func TestParseKey(t *testing.T) {
	for _, bad := range []string{"", "kiln_", "kiln_abc_def", "sk-" + strings.Repeat("a", 40), "kiln_" + strings.Repeat("a", 16) + "_short"} {
		if _, _, ok := ParseKey(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func FuzzParseKey(f *testing.F) {
	f.Add("kiln_abcdefghijklmnop_" + strings.Repeat("x", 52))
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, ok := ParseKey(s)
		if ok && ("kiln_"+id+"_"+secret != s || len(id) != 16) {
			t.Fatalf("ParseKey(%q) = %q %q", s, id, secret)
		}
	})
}
