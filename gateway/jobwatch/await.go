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
// synchronous request does. When the time is up the job goes on: the
// error (504) says where to find it and h gets its Location. When the
// client went away the job is canceled, as nobody waits for it any more.
func AwaitFinal(ctx context.Context, w Waiter, h http.Header, tenant, id string, timeout time.Duration) (*jobs.Job, *apierr.Error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done, err := w.Wait(wctx, tenant, id)
	if err == nil {
		return done, nil
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		h.Set("Location", "/v1/jobs/"+id)
		// The SDKs retry 5xx; a retry would only start a second job.
		h.Set("X-Should-Retry", "false")
		return nil, apierr.New(http.StatusGatewayTimeout, "timeout", "",
			"the images were not ready within %v (sync_timeout); job %s goes on: poll GET /v1/jobs/%s until its status is succeeded, "+
				"or subscribe to it on the WebSocket /v1/ws?subscribe=%s", timeout, id, id, id)
	}
	w.Cancel(context.WithoutCancel(ctx), tenant, id)
	return nil, apierr.New(http.StatusServiceUnavailable, apierr.CodeUnavailable, "", "waiting for the job failed: %v", err)
}
