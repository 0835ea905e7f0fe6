// Package quota enforces the per-tenant quotas that depend on time and
// load: concurrent jobs (queued or running) and images per minute (a token
// bucket refilled continuously: golang.org/x/time/rate). Exceeding either is a 429 with
// Retry-After; static limits (size, steps, n) are checked by validation.
package quota

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
)

// Limiter tracks live jobs and image rates per tenant. It is safe for
// concurrent use.
type Limiter struct {
	mu      sync.Mutex
	active  map[string]map[string]bool
	buckets map[string]*rate.Limiter
	now     func() time.Time
}

// New returns an empty limiter.
func New() *Limiter {
	return &Limiter{active: map[string]map[string]bool{}, buckets: map[string]*rate.Limiter{}, now: time.Now}
}

// Reserve admits a job of n images for the tenant or says why not. On
// success the job counts as live until Observe reports it finished, or
// until the returned undo is called (when the submission fails).
func (l *Limiter) Reserve(p auth.Principal, jobID string, n int) (undo func(), err *apierr.Error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := p.Quota
	if live := len(l.active[p.Tenant]); live >= q.ConcurrentJobs {
		return nil, apierr.TooMany(apierr.CodeConcurrency, 2*time.Second,
			"%d jobs are queued or running, the tenant limit concurrent_jobs is %d; wait for one to finish", live, q.ConcurrentJobs)
	}
	if n > q.ImagesPerMinute {
		return nil, apierr.Limit("n", "n=%d exceeds the tenant limit images_per_minute=%d", n, q.ImagesPerMinute)
	}
	// A bucket of images_per_minute tokens (full at first), refilled at
	// images_per_minute / 60 per second; a changed quota applies at once.
	perSecond := rate.Limit(float64(q.ImagesPerMinute) / 60)
	now := l.now()
	b := l.buckets[p.Tenant]
	if b == nil {
		b = rate.NewLimiter(perSecond, q.ImagesPerMinute)
		l.buckets[p.Tenant] = b
	} else if b.Limit() != perSecond || b.Burst() != q.ImagesPerMinute {
		b.SetLimitAt(now, perSecond)
		b.SetBurstAt(now, q.ImagesPerMinute)
	}
	r := b.ReserveN(now, n)
	if wait := r.DelayFrom(now); !r.OK() || wait > 0 {
		r.CancelAt(now)
		return nil, &apierr.Error{Status: http.StatusTooManyRequests, Code: apierr.CodeRateLimited, RetryAfter: wait,
			Message: "the tenant limit images_per_minute is " + strconv.Itoa(q.ImagesPerMinute) + "; retry after the time in Retry-After"}
	}
	set := l.active[p.Tenant]
	if set == nil {
		set = map[string]bool{}
		l.active[p.Tenant] = set
	}
	set[jobID] = true
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.active[p.Tenant], jobID)
		r.CancelAt(l.now()) // the images were not made: their tokens return
	}, nil
}

// Observe records a job's state as seen in the job records: live jobs
// count against concurrent_jobs, finished ones no longer do.
func (l *Limiter) Observe(tenant, jobID string, live bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	set := l.active[tenant]
	if live {
		if set == nil {
			set = map[string]bool{}
			l.active[tenant] = set
		}
		set[jobID] = true
		return
	}
	if set != nil {
		delete(set, jobID)
		if len(set) == 0 {
			delete(l.active, tenant)
		}
	}
}

// Active returns how many jobs of the tenant are live.
func (l *Limiter) Active(tenant string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.active[tenant])
}
