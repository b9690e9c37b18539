package etcdutil

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/etcdkit/etcdkit/internal/etcderr"
)

const (
	// AttemptTimeout bounds one attempt of a request to etcd. A member that keeps requests
	// without answering (paused, or a follower forwarding them to a leader that is gone)
	// holds an attempt until then.
	AttemptTimeout = 2 * time.Second
	// hedgeAfter is how long a request waits for an answer before it sends two more
	// attempts beside the ones in flight (jittered by a fifth either way), up to maxInFlight
	// of them. The client sends each request to the next member in turn, but its other
	// requests come in between, in step with these: an attempt sent again alone can land on
	// the same silent member every time (it does, under a session's keep-alives). Two sent
	// at once go to two members, one of them not the silent one.
	hedgeAfter  = 400 * time.Millisecond
	maxInFlight = 5
	// MinRetryWait and MaxRetryWait bound the pause before a request whose attempts all
	// failed at once (rather than at their deadline) on a transient error is sent again.
	MinRetryWait = 20 * time.Millisecond
	MaxRetryWait = 500 * time.Millisecond
)

// Retryable reports whether a request that failed with err may succeed when sent again:
// etcd's transient errors, and an expired auth token (the client fetches a new one).
func Retryable(err error) bool {
	k := etcderr.Classify(err)
	return k == etcderr.Transient || k == etcderr.TokenExpired
}

// jitter returns d give or take a fifth.
func jitter(d time.Duration) time.Duration {
	return d - d/5 + rand.N(2*d/5+1)
}

// Hedge sends a request until etcd answers it, an attempt fails with an error that is not
// retryable, or ctx ends. It returns the first answer, or the last error (the caller checks
// ctx), and how many attempts it sent. Each attempt has a deadline of its own
// (AttemptTimeout); while none has been answered, two more are sent every hedgeAfter, so
// that a member that keeps requests without answering delays the request by a fraction of
// a second rather than by the deadline. When every attempt in flight has failed, the
// next two are sent at once after timeouts, and one after a short backoff otherwise.
//
// Only requests that are safe to send twice, even at the same time, may use it: reads,
// deletes, and guarded writes whose caller recognises its own earlier success, since an
// attempt that failed (a timeout, "leader changed") or is still in flight may be applied
// all the same. op must be safe for concurrent use.
func Hedge[T any](ctx context.Context, log logr.Logger, what string, op func(context.Context) (T, error)) (T, int, error) {
	type result struct {
		v        T
		err      error
		timedOut bool
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	actx, cancel := context.WithCancel(ctx)
	defer cancel() // runs before wg.Wait: the attempts in flight end with it
	results := make(chan result)
	sent, inFlight := 0, 0
	send := func(n int) {
		for ; n > 0 && inFlight < maxInFlight; n-- {
			sent++
			inFlight++
			wg.Add(1)
			// The attempt ends by its deadline, or when retry returns and cancels actx; its
			// result is dropped then.
			go func() {
				defer wg.Done()
				c, cancel := context.WithTimeout(actx, AttemptTimeout)
				defer cancel()
				v, err := op(c)
				r := result{v: v, err: err, timedOut: c.Err() != nil}
				select {
				case results <- r:
				case <-actx.Done():
				}
			}()
		}
	}
	bo := Backoff{Min: MinRetryWait, Max: MaxRetryWait}
	hedge := time.NewTimer(jitter(hedgeAfter))
	defer hedge.Stop()
	send(1)
	var last result
	for {
		select {
		case <-ctx.Done():
			if last.err == nil {
				last.err = context.Cause(ctx)
			}
			return last.v, sent, last.err
		case <-hedge.C:
			send(2)
			hedge.Reset(jitter(hedgeAfter))
		case r := <-results:
			inFlight--
			if r.err == nil || ctx.Err() != nil || !Retryable(r.err) {
				return r.v, sent, r.err
			}
			last = r
			log.V(1).Info("etcd request failed, retrying", "request", what, "attempt", sent, "error", r.err.Error())
			if inFlight > 0 {
				continue
			}
			if r.timedOut {
				send(2)
			} else {
				if !Sleep(ctx, bo.Next()) {
					return r.v, sent, r.err
				}
				send(1)
			}
			hedge.Reset(jitter(hedgeAfter))
		}
	}
}
