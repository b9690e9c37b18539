package lock

import (
	"context"

	"github.com/go-logr/logr"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// retry sends a request to etcd as etcdutil.Hedge does: beside an attempt slow to answer,
// and again after transient errors, until an answer, an error that is not retryable, or the
// end of ctx. Only requests safe to send twice may use it (see etcdutil.Hedge).
func retry[T any](ctx context.Context, log logr.Logger, what string, op func(context.Context) (T, error)) (T, int, error) {
	return etcdutil.Hedge(ctx, log, what, op)
}

// retryable reports whether a request that failed with err may succeed when sent again.
func retryable(err error) bool { return etcdutil.Retryable(err) }

// detached returns a context for a cleanup (a release, the removal of a queue entry) that
// must happen although its caller's ctx has ended: ctx's values without its end, bounded
// by cleanupTimeout.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}

// retryCleanup is retry for a cleanup: with the caller's ctx while it lives, then, when
// etcd has not answered by its end, with a detached one (see detached). It returns the
// attempts of both.
func retryCleanup[T any](ctx context.Context, log logr.Logger, what string, op func(context.Context) (T, error)) (T, int, error) {
	var v T
	var n int
	var err error
	if ctx.Err() == nil {
		v, n, err = retry(ctx, log, what, op)
		if err == nil || ctx.Err() == nil {
			return v, n, err
		}
	}
	dctx, cancel := detached(ctx)
	defer cancel()
	v, m, err := retry(dctx, log, what, op)
	return v, n + m, err
}
