package urlsign

import (
	"bytes"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	s, err := New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	q := s.Query("acme", "img-0", time.Hour)
	if tenant, err := s.Verify(q, "img-0"); err != nil || tenant != "acme" {
		t.Fatalf("verify: %q %v", tenant, err)
	}
	if _, err := s.Verify(q, "img-1"); err == nil {
		t.Fatal("signature valid for another image")
	}
	forged := q
	forged.Set("tenant", "other")
	if _, err := s.Verify(forged, "img-0"); err == nil {
		t.Fatal("signature valid for another tenant")
	}
	q = s.Query("acme", "img-0", time.Hour)
	now = now.Add(2 * time.Hour)
	if _, err := s.Verify(q, "img-0"); err == nil {
		t.Fatal("expired link accepted")
	}
	if _, err := New([]byte("short")); err == nil {
		t.Fatal("short secret accepted")
	}
}
