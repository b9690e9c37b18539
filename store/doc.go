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
// A reconcile runs with a fence in its context (fence.With): the comparison that holds only
// while its process still owns the work (the shard owner key's create revision, or the
// leader key). Every write adds that comparison to its transaction, so a process that was
// paused or partitioned past its lease can never have a write accepted: it gets an error wrapping fence.ErrFenced.
// Code outside a reconcile may pass a context without a fence; its writes are unfenced.
//
// # Finalizers
//
// A type that embeds Lifecycle takes part in the finalizer protocol: Delete of an object
// with finalizers marks it (DeletionRequested) instead of deleting it; the controllers
// that put the finalizers there (AddFinalizer) see the mark, do their cleanup, and remove
// their finalizer (RemoveFinalizer, fenced like every write of a reconcile); the removal
// of the last one deletes the key in the same transaction. The mark and the finalizers
// are stored in etcd with the object, so the cleanup happens even when every replica was
// down at the time of the delete, or the one cleaning up is killed in the middle. JSON
// (the default codec of struct types) stores them; string and []byte values have none. A
// delete that bypasses the store (etcdctl del) removes the key at once: its reconcile
// then has only the key's tombstone (reconcile.TombstoneFrom).
//
// # When etcd does not answer
//
// Reads, and writes whose answer etcd lost to a leader change, a timeout or an unavailable
// member, are retried within the caller's context. A write is sent again only once a read
// shows that it was not applied (its precondition still holds, so it cannot be applied
// twice); a write that was applied is reported as done, never as the caller's own
// ErrConflict. When the key has moved in between, so that no one can tell whether the
// write was applied, the error is ErrOutcomeUnknown: read the key again before deciding.
package store
