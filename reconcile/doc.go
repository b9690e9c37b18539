// Package reconcile is what a controller author writes against: a Reconciler receives a
// Request (an etcd key) and drives the stored state of that key towards what is wanted,
// returning a Result that says whether and when to look again.
//
// # The controller
//
// A Controller feeds Requests from sources (package source) through a work queue to
// MaxConcurrentReconciles workers. The queue keeps client-go's invariant: a key is never on
// two workers at once; adds during its reconcile are parked and handed out once after it;
// many adds collapse into one. Reconciling is level-triggered: a Reconciler reads the
// current state, never the event that woke it.
//
// Live changes go first: a key changed by a watch event (or due for a retry or a
// RequeueAfter) is handed to a worker before the backlog of a resync (the initial list, a
// relist, a new leadership, a claimed shard), in the order the changes came; while backlog
// waits, at most ten live keys go out in a row, so that a resync drains under any stream of
// changes.
//
// After a reconcile:
//   - an error is retried after what Options.RateLimiter says (by default client-go's: the
//     longer of a per-key exponential backoff, 5 ms doubling, and an overall bucket of 10
//     retries a second with a burst of 100), unless it is a TerminalError;
//   - Result.RequeueAfter reconciles the key again after that delay (the earliest of several
//     pending delays wins);
//   - Result.Requeue (deprecated: use RequeueAfter, or return an error) reconciles it again
//     with backoff;
//   - otherwise the key's backoff is forgotten.
//
// A panic in a Reconciler is recovered and handled as an error. Every reconcile's context
// carries a logger with the key and a reconcile id (LoggerFrom), and the fence of the
// process's ownership (fence.From), so that store writes made in it are refused once the
// ownership is lost.
//
// # Deletes
//
// A reconcile of a deleted key finds it gone from the cache, and its context holds the
// key's last state (TombstoneFrom): the value it had before the delete, kept until a
// reconcile of the key ends with nothing more to do, the key is created again, or
// Options.TombstoneTTL passes. A replica that does not reconcile the key (a follower, a
// member that does not own its shard) keeps the tombstone too, and hands it to its own
// reconcile if it takes the key over within the TTL. A tombstone lives in memory: a
// delete that happens while every replica is down leaves none, so cleanup that must never
// be missed uses the finalizers of package store, which live in etcd.
//
// # Event filters
//
// A source's predicates (source.Options.Predicates) and the controller's EventFilters
// decide which events reach the event handlers, both made of source.Predicate values. A
// resync (Controller.Resync when a gate starts admitting again, as a new leader does;
// ResyncWhere when a shard is claimed) turns every cached key into a resync event, a Put
// with Initial set and PrevKV nil, and puts it through the same predicates and filters:
// a key or value filter drops the same keys on a resync as live, and a change filter such
// as source.ValueChanged lets every resync through, so that no key that the previous owner
// left unreconciled is skipped (see package source for each built-in).
package reconcile
