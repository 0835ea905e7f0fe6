package urlsign

import (
	"bytes"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzVerify: no query string grants an image except the one signed for
// it, and none grants another tenant.
func FuzzVerify(f *testing.F) {
	s, err := New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		f.Fatal(err)
	}
	good := s.Query("acme", "img-0", time.Hour)
	f.Add(good.Encode(), "img-0")
	f.Add("tenant=acme&expires=99999999999&sig=00", "img-0")
	f.Add("tenant=&expires=-1&sig=zz", "")
	f.Fuzz(func(t *testing.T, raw, image string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		tenant, err := s.Verify(q, image)
		if err != nil {
			return
		}
		// Accepted: it must be what Query would sign (hex in either case).
		if !strings.EqualFold(q.Get("sig"), s.mac(tenant, image, mustInt(q.Get("expires")))) || tenant != q.Get("tenant") {
			t.Fatalf("accepted a forged query %q for %q", raw, image)
		}
	})
}

func mustInt(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}
