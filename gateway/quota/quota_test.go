package quota

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/server/config"
)

func principal(concurrent, ipm int) auth.Principal {
	return auth.Principal{Tenant: "acme", Quota: config.Quota{ConcurrentJobs: concurrent, ImagesPerMinute: ipm,
		MaxPixels: 1 << 20, MaxSteps: 50, MaxN: 4}}
}

func TestConcurrentJobs(t *testing.T) {
	l := New()
	p := principal(2, 1000)
	if _, err := l.Reserve(p, "j1", 1); err != nil {
		t.Fatal(err)
	}
	undo, err := l.Reserve(p, "j2", 1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Reserve(p, "j3", 1)
	if err == nil || err.Status != http.StatusTooManyRequests || err.Code != apierr.CodeConcurrency || err.RetryAfter <= 0 {
		t.Fatalf("third job: %+v", err)
	}
	undo() // j2's submission failed
	if _, err := l.Reserve(p, "j3", 1); err != nil {
		t.Fatalf("after undo: %v", err)
	}
	l.Observe("acme", "j1", false) // j1 finished
	if _, err := l.Reserve(p, "j4", 1); err != nil {
		t.Fatalf("after finish: %v", err)
	}
	// Another tenant is not affected.
	q := p
	q.Tenant = "other"
	if _, err := l.Reserve(q, "k1", 1); err != nil {
		t.Fatal(err)
	}
}

func TestImagesPerMinute(t *testing.T) {
	l := New()
	now := time.Unix(0, 0)
	l.now = func() time.Time { return now }
	p := principal(100, 6) // one image every 10 s
	for i := 0; i < 3; i++ {
		if _, err := l.Reserve(p, "j"+strconv.Itoa(i), 2); err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
	}
	_, err := l.Reserve(p, "j9", 2)
	if err == nil || err.Code != apierr.CodeRateLimited || err.RetryAfter != 20*time.Second {
		t.Fatalf("over rate: %+v", err)
	}
	now = now.Add(20 * time.Second)
	if _, err := l.Reserve(p, "j9", 2); err != nil {
		t.Fatalf("after Retry-After: %v", err)
	}
	if _, err := l.Reserve(p, "big", 7); err == nil || err.Status != http.StatusBadRequest || err.Field != "n" {
		t.Fatalf("n above the per-minute limit: %+v", err)
	}
}

// A submission that fails returns its images to the bucket, and a changed
// images_per_minute applies to the tenant's existing bucket.
func TestUndoRefundsAndQuotaChanges(t *testing.T) {
	l := New()
	now := time.Unix(0, 0)
	l.now = func() time.Time { return now }
	p := principal(100, 4)
	undo, err := l.Reserve(p, "a", 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Reserve(p, "b", 1); err == nil || err.Code != apierr.CodeRateLimited {
		t.Fatalf("empty bucket: %+v", err)
	}
	undo()
	if _, err := l.Reserve(p, "b", 4); err != nil {
		t.Fatalf("after undo: %v", err)
	}
	p.Quota.ImagesPerMinute = 60 // one image per second from now on
	if _, err := l.Reserve(p, "c", 1); err == nil || err.RetryAfter != time.Second {
		t.Fatalf("raised quota, empty bucket: %+v", err)
	}
	now = now.Add(3 * time.Second)
	if _, err := l.Reserve(p, "c", 3); err != nil {
		t.Fatalf("raised quota: %v", err)
	}
	if _, err := l.Reserve(p, "d", 1); err == nil || err.RetryAfter != time.Second {
		t.Fatalf("raised quota, empty again: %+v", err)
	}
}
