package jobwatch

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/server/jobs"
)

// Waiter waits for jobs to become final and cancels them (the gateway, as
// the synchronous client APIs see it).
type Waiter interface {
	Wait(ctx context.Context, tenant, id string) (*jobs.Job, error)
	Cancel(ctx context.Context, tenant, id string)
}

// AwaitFinal waits up to timeout for a job to become final, as a
// synchronous request does; when the client goes away or the time is up
// the job is canceled (nobody waits for it any more) and the error says
// which.
func AwaitFinal(ctx context.Context, w Waiter, tenant, id string, timeout time.Duration) (*jobs.Job, *apierr.Error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done, err := w.Wait(wctx, tenant, id)
	if err == nil {
		return done, nil
	}
	w.Cancel(context.WithoutCancel(ctx), tenant, id)
	if errors.Is(err, context.DeadlineExceeded) {
		return nil, apierr.New(http.StatusGatewayTimeout, "timeout", "", "the images were not ready within %v; the job was canceled", timeout)
	}
	return nil, apierr.New(http.StatusServiceUnavailable, apierr.CodeUnavailable, "", "waiting for the job failed: %v", err)
}
