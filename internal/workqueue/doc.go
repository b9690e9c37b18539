// Package workqueue is the queue between sources and reconcile workers: the client-go model,
// with two priorities, rate-limited retries and delays built in.
//
// The invariant, kept by the dirty and processing sets of Queue: a key is queued or in
// process, never both, and never on two workers; an Add while the key is in process is parked
// and handed out again after Done; many Adds of a queued key collapse into one, at the
// higher of their priorities.
//
// Priorities: a Live key (a change as it happened, a retry or a RequeueAfter when due) is
// handed out before any Backlog key (a resync), and Live keys in the order they were
// queued; but while a Backlog key waits, at most Options.LiveBurst Live keys go out in a
// row, so that a resync drains under any stream of live changes.
//
// Retries wait as a RateLimiter says: by default client-go's DefaultControllerRateLimiter,
// the longer of a per-key exponential backoff and an overall token bucket.
package workqueue
