// Package store keeps typed objects under an etcd prefix and writes them with optimistic
// concurrency: every write is one etcd transaction that holds only if the object is as the
// writer saw it, and only if the writer's fence still holds.
//
// # Optimistic concurrency
//
// Update takes the ModRevision the caller read; when the object moved since, it returns a
// *ConflictError (errors.Is(err, ErrConflict)) carrying the current state, and writes
// nothing. Mutate does the read-modify-write loop for the caller, retrying conflicts with
// backoff.
//
// # Fencing
//
// A reconcile runs with a fence in its context (WithFence): the comparison that holds only
// while its process still owns the work (the shard owner key's create revision, or the
// leader key). Every write adds that comparison to its transaction, so a process that was
// paused or partitioned past its lease can never have a write accepted: it gets ErrFenced.
// Code outside a reconcile may pass a context without a fence; its writes are unfenced.
package store
