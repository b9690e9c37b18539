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
// After a reconcile:
//   - an error is retried with per-key exponential backoff (5 ms doubling, capped), unless
//     it is a TerminalError;
//   - Result.RequeueAfter reconciles the key again after that delay (the earliest of several
//     pending delays wins);
//   - Result.Requeue reconciles it again with backoff;
//   - otherwise the key's backoff is forgotten.
//
// A panic in a Reconciler is recovered and handled as an error. Every reconcile's context
// carries a logger with the key and a reconcile id (LoggerFrom), and the fence of the
// process's ownership (store.FenceFrom), so that store writes made in it are refused once
// the ownership is lost.
package reconcile
