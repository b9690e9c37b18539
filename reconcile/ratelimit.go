package reconcile

import (
	"time"

	"github.com/etcdkit/etcdkit/internal/workqueue"
)

// Defaults of DefaultRateLimiter, client-go's DefaultControllerRateLimiter.
const (
	// DefaultRetryQPS is how many retries a second the default limiter lets through, for
	// all the keys of a controller together, once its burst is spent.
	DefaultRetryQPS = workqueue.DefaultQPS
	// DefaultRetryBurst is how many retries the default limiter lets through at once.
	DefaultRetryBurst = workqueue.DefaultBurst
)

// RateLimiter decides how long a request waits before it is retried, after an error or a
// Result.Requeue (Options.RateLimiter). The controller calls When for every retry, Forget
// once the key's retries are over (its reconcile succeeded, asked for RequeueAfter, failed
// terminally, or was not admitted by the gate), and NumRequeues for its logs.
// Implementations must be safe for concurrent use.
type RateLimiter interface {
	// When returns how long key waits before its next retry, and counts the retry.
	When(key string) time.Duration
	// Forget ends the tracking of key: its next failure is counted as its first.
	Forget(key string)
	// NumRequeues is the number of retries of key counted since its last Forget.
	NumRequeues(key string) int
}

// DefaultRateLimiter returns the limiter of a controller whose Options name none, with the
// default BaseDelay and MaxDelay: client-go's DefaultControllerRateLimiter, the longer of
// NewExponentialRateLimiter(5 ms, 1000 s) and NewBucketRateLimiter(10, 100).
func DefaultRateLimiter() RateLimiter {
	return defaultRateLimiter(DefaultBaseDelay, DefaultMaxDelay)
}

func defaultRateLimiter(base, max time.Duration) RateLimiter {
	return NewMaxOfRateLimiter(NewExponentialRateLimiter(base, max), NewBucketRateLimiter(DefaultRetryQPS, DefaultRetryBurst))
}

// NewExponentialRateLimiter returns a per-key backoff: base after a key's first failure,
// doubled for every further one since its last Forget, capped at max.
func NewExponentialRateLimiter(base, max time.Duration) RateLimiter {
	return workqueue.Exponential[string](base, max)
}

// NewBucketRateLimiter returns an overall token bucket, for every key together: it holds up
// to burst tokens (full at the start) and gains qps a second; each retry takes one, and
// waits for it when the bucket is empty. It does not track keys: Forget does nothing and
// NumRequeues is 0. A qps of zero or less, or a burst below 1, never delays.
func NewBucketRateLimiter(qps float64, burst int) RateLimiter {
	return workqueue.Bucket[string](qps, burst)
}

// NewMaxOfRateLimiter returns a limiter whose delay is the longest of limiters' delays
// (each counts every retry) and whose NumRequeues is the largest of theirs.
func NewMaxOfRateLimiter(limiters ...RateLimiter) RateLimiter {
	ls := make([]workqueue.RateLimiter[string], len(limiters))
	for i, l := range limiters {
		ls[i] = l
	}
	return workqueue.MaxOf(ls...)
}
