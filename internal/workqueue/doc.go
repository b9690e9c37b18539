// Package workqueue is the queue between sources and reconcile workers: the client-go model,
// with per-key backoff and delays built in.
//
// The invariant, kept by the dirty and processing sets of Queue: a key is queued or in
// process, never both, and never on two workers; an Add while the key is in process is parked
// and handed out again after Done; many Adds of a queued key collapse into one.
package workqueue
